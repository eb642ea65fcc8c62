"""Architecture configuration of the St4RTrack network: every size is a parameter, with named presets.

``ModelConfig.from_dict`` reads the plain dict form (ours, the golden ``tiny_public_meta.json`` and Hugging Face
``config.json`` files), so one schema serves checkpoints, YAML configs and tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """An architecture description we cannot build (unknown field value, inconsistent sizes)."""


def _default_hooks(dec_depth: int) -> tuple[int, int, int, int]:
    """DPT hooks over [encoder output, decoder layer 1..d]: the official choice is [0, d/2, 3d/4, d]."""
    return (0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the encoder, the two decoders and the two DPT heads, plus the input resolution.

    ``img_size`` is (width, height) in pixels, as the official configuration spells it; both must be multiples of
    ``patch_size``.
    """

    img_size: tuple[int, int] = (512, 288)
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    rope_freq: float = 100.0
    dpt_hooks: tuple[int, ...] = field(default_factory=lambda: _default_hooks(12))
    layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    feature_dim: int = 256
    last_dim: int = 128
    out_channels: int = 4

    def __post_init__(self) -> None:
        w, h = self.img_size
        if w % self.patch_size or h % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} must be multiples of patch_size {self.patch_size}")
        for name, dim, heads in (
            ("encoder", self.enc_embed_dim, self.enc_num_heads),
            ("decoder", self.dec_embed_dim, self.dec_num_heads),
        ):
            if dim % heads:
                raise ConfigError(f"{name} width {dim} is not divisible by its {heads} heads")
            if (dim // heads) % 4:
                raise ConfigError(f"{name} head dim {dim // heads} must be a multiple of 4 for 2D RoPE")
        if len(self.dpt_hooks) != 4 or len(self.layer_dims) != 4:
            raise ConfigError("dpt_hooks and layer_dims need exactly 4 entries")
        if max(self.dpt_hooks) > self.dec_depth or min(self.dpt_hooks) < 0:
            raise ConfigError(f"dpt_hooks {self.dpt_hooks} must index [0, dec_depth={self.dec_depth}]")
        if self.feature_dim % 2:
            raise ConfigError("feature_dim must be even (the head halves it)")

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Token grid (rows, cols)."""
        return self.img_size[1] // self.patch_size, self.img_size[0] // self.patch_size

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.img_size[1], self.img_size[0]

    def with_image_size(self, width: int, height: int) -> ModelConfig:
        """Same network at another resolution (the weights do not depend on it: RoPE has no table to learn)."""
        return dataclasses.replace(self, img_size=(int(width), int(height)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain dict; unknown keys that do not change the architecture are ignored.

        Accepts ``pos_embed`` ("RoPE100"), ``depth_mode``/``conf_mode`` ("exp", "1+exp" or the official tuples)
        and rejects values this network does not implement instead of silently building something else.
        """
        d = dict(d)
        pos = d.pop("pos_embed", "RoPE100")
        if not (isinstance(pos, str) and pos.startswith("RoPE")):
            raise ConfigError(f"unsupported pos_embed {pos!r}: only 2D RoPE ('RoPE<freq>') is implemented")
        if "rope_freq" not in d:
            try:
                d["rope_freq"] = float(pos[4:])
            except ValueError as e:
                raise ConfigError(f"cannot read the RoPE frequency from pos_embed {pos!r}") from e
        _check_mode(d.pop("depth_mode", "exp"), "depth_mode", ("exp",))
        _check_mode(d.pop("conf_mode", "1+exp"), "conf_mode", ("1+exp", "exp"))
        head = d.pop("head_type", "dpt")
        if head != "dpt":
            raise ConfigError(f"unsupported head_type {head!r}: only 'dpt' is implemented")
        out_mode = d.pop("output_mode", "pts3d")
        if out_mode != "pts3d":
            raise ConfigError(f"unsupported output_mode {out_mode!r}: only 'pts3d' is implemented")
        img = d.get("img_size")
        if isinstance(img, int):
            d["img_size"] = (img, img)
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("img_size", "dpt_hooks", "layer_dims"):
            if key in kw:
                kw[key] = tuple(int(x) for x in kw[key])
        if "dpt_hooks" not in kw:
            kw["dpt_hooks"] = _default_hooks(int(kw.get("dec_depth", cls.dec_depth)))
        return cls(**kw)


def _check_mode(value: Any, name: str, allowed: tuple[str, ...]) -> None:
    """The official config writes modes as tuples like ('exp', -inf, inf); only the kind matters here."""
    kind = value[0] if isinstance(value, (tuple, list)) else value
    if kind not in allowed:
        raise ConfigError(f"unsupported {name} {value!r}: expected one of {allowed}")


PRESETS: dict[str, ModelConfig] = {
    # The official St4RTrack configuration: ViT-L encoder, 2 × ViT-B decoders, DPT heads, 512×288.
    "vitl_512": ModelConfig(),
    # Small presets with the same structure, for the CPU (tests, demo, the embedded default model).
    "small_256": ModelConfig(
        img_size=(256, 160), enc_embed_dim=192, enc_depth=6, enc_num_heads=3, dec_embed_dim=128, dec_depth=6,
        dec_num_heads=4, dpt_hooks=_default_hooks(6), layer_dims=(24, 48, 96, 192), feature_dim=64, last_dim=32,
    ),
    "tiny_128": ModelConfig(
        img_size=(128, 80), enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=48, dec_depth=4,
        dec_num_heads=2, dpt_hooks=_default_hooks(4), layer_dims=(8, 16, 32, 64), feature_dim=32, last_dim=16,
    ),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}") from None
