"""Load and save St4RTrack weights without executing anything a checkpoint contains.

Three formats:
- official ``.pth``: a pickle ``{"model": state_dict, "args": Namespace(model="Cls(kw=...)"), ...}``. It is read with
  ``torch.load(weights_only=True)``, which unpickles only tensors, containers and an explicit allowlist (the argparse
  ``Namespace``, NumPy scalars); anything else is refused before it can run. The architecture is read from the
  constructor string by walking its syntax tree and accepting literals only — it is never ``eval``-ed.
- Hugging Face style folder: ``config.json`` + ``model.safetensors``.
- ours: one ``.safetensors`` file whose metadata holds the ``ModelConfig`` as JSON (optionally in fp16/bf16 and
  split into ``stem-0000i-of-0000n.safetensors`` shards, for channels that limit file sizes).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ConfigError, ModelConfig
from .network import St4RTrackNet

log = logging.getLogger(__name__)

OUR_FORMAT = "st4rtrack_ros/1"
# Runtime resolution for official checkpoints, whose constructor only names the training crop (512, 512).
OFFICIAL_RUN_SIZE = (512, 288)
_ARCH_KEYS = ("enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads")
_KNOWN_CLASS_HINTS = ("croco", "st4rtrack", "dust3r", "mast3r")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be turned into a St4RTrackNet; the message says why."""


# ---------------------------------------------------------------------------------------------------------------
# the official constructor string


def _literal(node: ast.AST) -> Any:
    """Value of a literal expression; names allowed: inf, nan, True, False, None. Nothing is evaluated."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        vals = [_literal(e) for e in node.elts]
        return tuple(vals) if isinstance(node, ast.Tuple) else vals
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return math.inf if node.id == "inf" else math.nan
    raise CheckpointError(f"constructor string holds a non-literal expression: {ast.unparse(node)!r}")


def parse_constructor(text: str) -> tuple[str, dict[str, Any]]:
    """'Cls(a=1, b=(2, -inf))' → ('Cls', {'a': 1, 'b': (2, -inf)}), or CheckpointError."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise CheckpointError(f"cannot parse the model constructor string {text!r}: {e}") from e
    call = tree.body
    if not isinstance(call, ast.Call) or call.args:
        raise CheckpointError(f"expected 'ClassName(key=value, ...)', got {text!r}")
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name is None:
        raise CheckpointError(f"cannot read the class name in {text!r}")
    kwargs = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise CheckpointError(f"'**' arguments are not supported in {text!r}")
        kwargs[kw.arg] = _literal(kw.value)
    return name, kwargs


def config_from_constructor(text: str, image_size: tuple[int, int] | None = None) -> ModelConfig:
    """ModelConfig from an official ``args.model`` string; unknown architectures give a clear error."""
    name, kwargs = parse_constructor(text)
    if not any(h in name.lower() for h in _KNOWN_CLASS_HINTS):
        raise CheckpointError(f"unknown architecture {name!r}: expected a CroCo/DUSt3R/St4RTrack model class")
    missing = [k for k in _ARCH_KEYS if k not in kwargs]
    if missing:
        raise CheckpointError(f"constructor string of {name} does not give {missing}; cannot size the network")
    kwargs["img_size"] = image_size or OFFICIAL_RUN_SIZE
    try:
        return ModelConfig.from_dict(kwargs)
    except ConfigError as e:
        raise CheckpointError(f"unsupported architecture in {name}(...): {e}") from e


# ---------------------------------------------------------------------------------------------------------------
# state dicts


def normalize_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring a state dict to the exact official key set.

    Strips a DataParallel ``module.`` prefix, fills the DPT alias keys from whichever twin is present
    (safetensors stores shared tensors once), and copies ``dec_blocks`` into a missing ``dec_blocks2`` (the
    official convention for checkpoints trained with one decoder).
    """
    out = {k.removeprefix("module."): v for k, v in sd.items()}
    for head in ("downstream_head1", "downstream_head2"):
        for i in range(4):
            a = f"{head}.dpt.scratch.layer{i + 1}_rn.weight"
            b = f"{head}.dpt.scratch.layer_rn.{i}.weight"
            if a in out and b not in out:
                out[b] = out[a]
            elif b in out and a not in out:
                out[a] = out[b]
    if not any(k.startswith("dec_blocks2.") for k in out):
        copied = {"dec_blocks2." + k[len("dec_blocks."):]: v for k, v in out.items() if k.startswith("dec_blocks.")}
        if copied:
            log.info("checkpoint has no dec_blocks2: copying dec_blocks into it")
            out.update(copied)
    return out


def _load_into(cfg: ModelConfig, sd: Mapping[str, torch.Tensor], device: torch.device | str, source: str
               ) -> St4RTrackNet:
    """Build on the meta device (no double allocation), check keys and shapes, then assign the tensors."""
    sd = normalize_state_dict(sd)
    with torch.device("meta"):
        net = St4RTrackNet(cfg)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    bad_shape = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or bad_shape:
        parts = [f"checkpoint {source} does not match the architecture it declares ({cfg.enc_depth}-block encoder "
                 f"{cfg.enc_embed_dim}-d, {cfg.dec_depth}-block decoders {cfg.dec_embed_dim}-d)"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches",
                                                                                          bad_shape)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... (+{len(items) - 12})" if len(items) > 12 else "")
                parts.append(f"{title} ({len(items)}): {shown}")
        raise CheckpointError("; ".join(parts))
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    net.load_state_dict(sd, strict=True, assign=True)
    return net.to(device).eval()


# ---------------------------------------------------------------------------------------------------------------
# the three formats


def _safe_globals() -> list[Any]:
    """What an official pickle may reference besides tensors: its argparse args and NumPy scalars in metadata."""
    allowed: list[Any] = [argparse.Namespace, np.dtype, np._core.multiarray.scalar]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return allowed


def _load_official(path: Path, device: torch.device | str, image_size: tuple[int, int] | None) -> St4RTrackNet:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]  # skip torch's advice to load unsafely
        boilerplate = ("Weights only load failed", "Check the documentation")
        detail = next((ln for ln in lines if not ln.startswith(boilerplate)), lines[0] if lines else "")[:300]
        why = ("it references objects outside the allowlist (tensors, containers, argparse Namespace, NumPy "
               "scalars)" if "global" in detail.lower() else
               "its pickle is not a valid weights-only pickle (truncated or corrupt)")
        raise CheckpointError(f"refused to load {path}: {why}; nothing in it was executed. Detail: {detail}") from e
    except Exception as e:  # torch raises RuntimeError, EOFError, struct.error, ... on truncated or foreign files
        raise CheckpointError(f"cannot read {path} ({path.stat().st_size} bytes) as a torch checkpoint, truncated or "
                              f"not a checkpoint: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                              ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    sd = ckpt.get("model", ckpt.get("state_dict"))
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: no 'model' state dict (keys: {sorted(ckpt)[:10]})")
    args = ckpt.get("args")
    ctor = getattr(args, "model", None) if args is not None and not isinstance(args, dict) else (args or {}).get(
        "model")
    if isinstance(ckpt.get("config"), Mapping):
        cfg = _config_from_mapping(ckpt["config"], image_size)
    elif isinstance(ctor, str):
        cfg = config_from_constructor(ctor, image_size)
    else:
        raise CheckpointError(f"{path}: no args.model constructor string or config to size the network from")
    return _load_into(cfg, sd, device, str(path))


def _config_from_mapping(d: Mapping[str, Any], image_size: tuple[int, int] | None) -> ModelConfig:
    d = dict(d.get("model", d)) if isinstance(d.get("model"), Mapping) else dict(d)
    if image_size is not None:
        d["img_size"] = image_size
    try:
        return ModelConfig.from_dict(d)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"unsupported architecture in config: {e}") from e


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {path} as safetensors: {e}") from e


def _load_hf_folder(path: Path, device: torch.device | str, image_size: tuple[int, int] | None) -> St4RTrackNet:
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise CheckpointError(f"{path} is a folder but has no {f.name} (expected config.json + model.safetensors)")
    try:
        cfg_dict = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: invalid JSON: {e}") from e
    sd, _ = read_safetensors(weights)
    return _load_into(_config_from_mapping(cfg_dict, image_size), sd, device, str(path))


_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})$")


def _shard_files(path: Path) -> list[Path] | None:
    """All shards of a sharded checkpoint (``stem-0000i-of-0000n.safetensors``) given any one of them, else None."""
    m = _SHARD_RE.match(path.stem)
    if m is None:
        return None
    n = int(m["n"])
    files = [path.with_name(f"{m['stem']}-{i:05d}-of-{n:05d}.safetensors") for i in range(1, n + 1)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"sharded checkpoint {path} is incomplete: missing {missing}")
    return files


def _load_ours(path: Path, device: torch.device | str, image_size: tuple[int, int] | None) -> St4RTrackNet:
    sd, meta = {}, {}
    for f in _shard_files(path) or [path]:
        part, meta = read_safetensors(f)
        sd.update(part)
    if "config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without a 'config' entry in its metadata")
    return _load_into(_config_from_mapping(json.loads(meta["config"]), image_size), sd, device, str(path))


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", image_size: tuple[int, int] | None = None
) -> St4RTrackNet:
    """A ready St4RTrackNet in eval mode from an official ``.pth``, a HF folder or our ``.safetensors``.

    ``image_size`` (width, height) overrides the run resolution stored with the weights.
    """
    path = Path(path)
    if not path.exists() and path.suffix == ".safetensors":  # "model.safetensors" saved as model-00001-of-000n
        path = next(iter(sorted(path.parent.glob(f"{path.stem}-00001-of-?????.safetensors"))), path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        return _load_hf_folder(path, device, image_size)
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted download or copy?")
    if path.suffix == ".safetensors":
        return _load_ours(path, device, image_size)
    return _load_official(path, device, image_size)


def save_checkpoint(net: St4RTrackNet, path: str | Path, metadata: Mapping[str, str] | None = None,
                    dtype: torch.dtype | None = None, max_shard_bytes: int | None = None) -> Path:
    """Write our format: safetensors (no pickle) with the config and free-form string metadata.

    ``dtype`` (e.g. ``torch.float16``) stores floating tensors at lower precision (the loader returns fp32).
    ``max_shard_bytes`` splits a larger file into ``stem-0000i-of-0000n.safetensors`` shards (transfer channels
    limit file sizes; the limit counts the header), each carrying the metadata; the first shard's path is returned,
    and ``load_checkpoint`` accepts any shard or the unsharded name. A tensor larger than the limit gets its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if ".scratch.layer_rn." not in k}
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    meta = {"format": OUR_FORMAT, "config": json.dumps(net.config.to_dict()), **(metadata or {})}
    header = len(json.dumps(meta)) + 64  # the limit bounds the file: count the header, ~100 B per tensor entry
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = header
    for k, v in sd.items():
        nbytes = v.numel() * v.element_size() + len(k) + 100
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = header
        shards[-1][k] = v
        size += nbytes
    if len(shards) == 1:
        save_file(sd, str(path), metadata=meta)
        return path
    n = len(shards)
    files = [path.with_name(f"{path.stem}-{i:05d}-of-{n:05d}.safetensors") for i in range(1, n + 1)]
    for f, part in zip(files, shards, strict=True):
        save_file(part, str(f), metadata=meta)
    return files[0]
