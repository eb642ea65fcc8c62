"""``st4rtrack-train``: supervised pretraining on the synthetic generator (torch + numpy + opencv + matplotlib only).

Every flag defaults to the dataclass default; with ``--resume`` the run directory's saved configuration is used and
only the flags given on the command line replace it (e.g. a new ``--time-budget-s`` or ``--num-workers``).

Data parallel: ``torchrun --nproc_per_node N -m st4rtrack_ros.cli.train ...`` (``--batch-size`` is the global
batch; rank 0 writes the run directory; ``training.loop`` and ``training.distributed``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from st4rtrack_ros.model.network import PARAM_SETS
from st4rtrack_ros.training import distributed
from st4rtrack_ros.training.config import TrainConfig
from st4rtrack_ros.training.loop import train

# flag → (section, field, type, help); section "" = TrainConfig itself
_FLAGS: dict[str, tuple[str, str, Any, str]] = {
    "--preset": ("", "model_preset", str, "model preset (small_256, tiny_128, vitl_512)"),
    "--steps": ("", "steps", int, "LR-schedule length and number of steps"),
    "--batch-size": ("", "batch_size", int,
                     "pairs per optimizer step over all ranks (multiple of ranks × --pairs-per-seq)"),
    "--lr": ("", "lr", float, "peak learning rate"),
    "--min-lr-ratio": ("", "min_lr_ratio", float, "final LR as a fraction of --lr"),
    "--warmup-steps": ("", "warmup_steps", int, "linear warm-up steps"),
    "--weight-decay": ("", "weight_decay", float, "AdamW weight decay (matrices only)"),
    "--grad-clip": ("", "grad_clip", float, "max global grad norm"),
    "--seed": ("", "seed", int, "seed of torch/numpy/python and model init"),
    "--num-workers": ("", "num_workers", int, "DataLoader worker processes rendering pairs"),
    "--eval-every": ("", "eval_every", int, "validate every K steps (0: never)"),
    "--n-val-groups": ("", "n_val_groups", int, "validation sequences (seeds 0..N-1)"),
    "--ckpt-every": ("", "ckpt_every", int, "write the resumable checkpoint every K steps"),
    "--log-every": ("", "log_every", int, "progress line every K steps"),
    "--time-budget-s": ("", "time_budget_s", float, "stop cleanly (checkpoint + export) after this wall time"),
    "--amp": ("", "amp", str, "auto (bf16 on CUDA) | bf16 (also CPU: native with AVX-512 BF16/AMX) | none"),
    "--init": ("", "init", str, "start from these weights (.safetensors, HF folder or official .pth)"),
    "--pool-groups": ("", "pool_groups", int,
                      "cycle over a pool of N training sequences (1: overfit check; with --cache-dir: render once)"),
    "--export-dtype": ("", "export_dtype", str, "fp32 | fp16 | bf16 for the final model.safetensors"),
    "--max-shard-mib": ("", "max_shard_mib", float, "split the export into shards of at most this many MiB"),
    "--train-params": ("", "train_params", str, "trained subset: " + " | ".join(reversed(PARAM_SETS))),
    "--device": ("", "device", str, "auto | cpu | cuda | cuda:N"),
    "--pairs-per-seq": ("data", "pairs_per_seq", int, "pairs drawn from each rendered sequence"),
    "--seq-len": ("data", "seq_len", int, "frames per generated sequence"),
    "--max-gap": ("data", "max_gap", int, "max frame gap j - anchor"),
    "--p-self": ("data", "p_self", float, "probability of a (anchor, anchor) pair"),
    "--data-seed": ("data", "seed", int, "seed mixed into every sequence draw"),
    "--data-presets": ("data", "presets", lambda s: tuple(s.split(",")),
                       "comma-separated synthetic presets (repeat one to oversample it in training)"),
    "--cache-dir": ("data", "cache_dir", str, "cache rendered sequences here (npz)"),
    "--lens-k1": ("data", "lens_k1", float, "radial lens distortion: k1 per sequence uniform in ±this (0: pinhole)"),
    "--alpha": ("loss", "alpha", float, "confidence regulariser α in c·e − α·log c"),
    "--lambda-depth": ("loss", "lambda_depth", float, "weight of L_depth"),
    "--lambda-align": ("loss", "lambda_align", float, "weight of L_align"),
    "--dyn-factor": ("loss", "dyn_factor", float, "moving-pixel weight = this × max static confidence"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="st4rtrack-train", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run directory (log.jsonl, ckpt/, model.safetensors, PNG)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from ckpt/last_state.pt")
    p.add_argument("--shared-scale", action="store_true",
                   help="one normalisation scale per group of pairs sharing an anchor (pairs must agree on scale)")
    p.add_argument("--no-dynamic-reweight", action="store_true", help="plain confidence weighting on moving pixels")
    p.add_argument("--freeze-encoder", action="store_true", help="train decoders and heads only")
    p.add_argument("--grad-checkpoint", action="store_true",
                   help="activation checkpointing of the transformer blocks (less memory, one more forward of them)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads in the main process (1 is fastest on a busy 2-core CPU)")
    p.add_argument("--budget-schedule", action="store_true",
                   help="cosine LR decays by max(step, elapsed/--time-budget-s) progress (ends in time)")
    for flag, (_, _, typ, hlp) in _FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=hlp)
    return p


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    """Overlay the flags given on ``base`` (a saved config dict) or on the defaults."""
    d = base if base is not None else TrainConfig().to_dict()
    d = {**d, "data": dict(d["data"]), "loss": dict(d["loss"])}
    for flag, (section, name, _, _) in _FLAGS.items():
        v = getattr(args, flag.lstrip("-").replace("-", "_"))
        if v is not None:
            (d[section] if section else d)[name] = v
    if args.no_dynamic_reweight:
        d["loss"]["dynamic_reweight"] = False
    if args.shared_scale:
        d["loss"]["shared_scale"] = True
    if args.freeze_encoder:
        d["freeze_encoder"] = True
    if args.grad_checkpoint:
        d["grad_checkpoint"] = True
    if args.budget_schedule:
        d["budget_schedule"] = True
    if base is None:  # pairs are rendered at the model's resolution
        from st4rtrack_ros.model.config import preset

        w, h = preset(d["model_preset"]).img_size
        d["data"]["width"], d["data"]["height"] = w, h
    return TrainConfig.from_dict(d)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    base = None
    state = out / "ckpt" / "last_state.pt"
    if args.resume:
        if not state.is_file():
            print(f"--resume: no {state}; starting a new run", file=sys.stderr)
        else:
            base = torch.load(state, map_location="cpu", weights_only=True)["config"]
    try:
        cfg = config_from_args(args, base)
    except (ValueError, TypeError) as e:
        print(f"st4rtrack-train: invalid configuration: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 speaks for the job
        print(f"config: {json.dumps(cfg.to_dict())}", file=sys.stderr)
    try:
        res = train(cfg, out, resume=base is not None)
    finally:
        distributed.teardown()
    if res.is_main:
        print(json.dumps({"step": res.step, "stopped_by_budget": res.stopped_by_budget,
                          "checkpoint": str(res.checkpoint), "export": str(res.export), "val": res.last_val}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
