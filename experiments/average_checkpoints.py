#!/usr/bin/env python3
"""Average the weights of checkpoints of one architecture (a "model soup"): a model and its own fine-tune often
average into a model that keeps what each learned. Used for the stage-3/stage-4 soup of docs/default_model.md.

  .venv/bin/python experiments/average_checkpoints.py st4rtrack_ros/weights/default.safetensors \
      out/train_s4/model.safetensors --out out/soup34/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.model.checkpoint import load_checkpoint, save_checkpoint


def _config_key(net: torch.nn.Module) -> str:
    """The model config as a comparable string: only checkpoints of one architecture can be averaged."""
    return repr(sorted(net.config.to_dict().items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", type=float, nargs="+", help="one per checkpoint (default: equal)")
    ap.add_argument("--export-dtype", choices=("fp32", "fp16"), default="fp16")
    args = ap.parse_args()
    weights = args.weights or [1.0] * len(args.checkpoints)
    if len(weights) != len(args.checkpoints):
        ap.error("give one --weights value per checkpoint")
    nets = [load_checkpoint(p, device="cpu") for p in args.checkpoints]
    if len({_config_key(n) for n in nets}) != 1:
        ap.error("the checkpoints have different model configs")
    total = sum(weights)
    out = nets[0]
    states = [n.state_dict() for n in nets]
    with torch.no_grad():
        for k, v in out.state_dict().items():
            if v.is_floating_point():
                v.copy_(sum(w / total * s[k].float() for w, s in zip(weights, states, strict=True)))
    meta = {"averaged_from": ", ".join(f"{w / total:g} × {p}" for w, p in zip(weights, args.checkpoints, strict=True))}
    path = save_checkpoint(out, args.out, meta, dtype=torch.float16 if args.export_dtype == "fp16" else None)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
