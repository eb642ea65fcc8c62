"""DPT head: turns four token layers into a full-resolution 4-channel map (xyz + confidence).

Layout follows the official state dict (``act_postprocess``, ``scratch.layer{1..4}_rn`` with the
``scratch.layer_rn`` alias list, ``scratch.refinenet{1..4}``, ``head``). All widths are parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds the skip feature (after a residual unit), refines, upsamples ×2, projects."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(ch)
        self.resConfUnit2 = ResidualConvUnit(ch)
        self.out_conv = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_upsample2(self.resConfUnit2(x)))


class Scratch(nn.Module):
    def __init__(self, layer_dims: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(d, feature_dim, 3, padding=1, bias=False) for d in layer_dims]
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = convs
        self.layer_rn = nn.ModuleList(convs)  # alias of layer{1..4}_rn: same modules, both key names in the dict
        self.refinenet1 = FusionBlock(feature_dim)
        self.refinenet2 = FusionBlock(feature_dim)
        self.refinenet3 = FusionBlock(feature_dim)
        self.refinenet4 = FusionBlock(feature_dim)


class _Upsample(nn.Module):
    """Parameter-free ×2 bilinear upsampling (keeps the official ``head.N`` numbering)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample2(x)


class DPTAdapter(nn.Module):
    def __init__(
        self,
        token_dims: tuple[int, int, int, int],
        layer_dims: tuple[int, ...],
        feature_dim: int,
        last_dim: int,
        out_channels: int,
        patch_size: int,
    ) -> None:
        super().__init__()
        if patch_size != 16:
            # The reassembly strides (×4, ×2, ×1, ×½ of the 1/16 grid) assume 16-pixel patches.
            raise ValueError("the DPT head is built for patch_size 16")
        l0, l1, l2, l3 = layer_dims
        self.act_postprocess = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(token_dims[0], l0, 1), nn.ConvTranspose2d(l0, l0, 4, stride=4)),
                nn.Sequential(nn.Conv2d(token_dims[1], l1, 1), nn.ConvTranspose2d(l1, l1, 2, stride=2)),
                nn.Sequential(nn.Conv2d(token_dims[2], l2, 1)),
                nn.Sequential(nn.Conv2d(token_dims[3], l3, 1), nn.Conv2d(l3, l3, 3, stride=2, padding=1)),
            ]
        )
        self.scratch = Scratch(layer_dims, feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            _Upsample(),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, out_channels, 1),
        )

    def forward(self, layers: list[torch.Tensor], grid_hw: tuple[int, int]) -> torch.Tensor:
        """``layers``: four (B, N, C_i) token tensors → (B, out_channels, 16·rows, 16·cols)."""
        rows, cols = grid_hw
        feats = []
        for tokens, post, rn in zip(layers, self.act_postprocess, self.scratch.layer_rn, strict=True):
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)
            feats.append(rn(post(x)))
        s = self.scratch
        path = s.refinenet4(feats[3])[:, :, : feats[2].shape[2], : feats[2].shape[3]]
        path = s.refinenet3(path, feats[2])
        path = s.refinenet2(path, feats[1])
        path = s.refinenet1(path, feats[0])
        return self.head(path)


class DPTHead(nn.Module):
    """Wraps the adapter under the official ``dpt.`` prefix and applies the output parameterisation."""

    def __init__(self, hooks: tuple[int, ...], **adapter_kw: object) -> None:
        super().__init__()
        self.hooks = tuple(hooks)
        self.dpt = DPTAdapter(**adapter_kw)  # type: ignore[arg-type]

    def forward(self, layers: list[torch.Tensor], grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns points (B, H, W, 3) and confidence (B, H, W)."""
        out = self.dpt([layers[i] for i in self.hooks], grid_hw).permute(0, 2, 3, 1)
        return points_from_raw(out[..., :3]), 1.0 + out[..., 3].exp()


def points_from_raw(v: torch.Tensor) -> torch.Tensor:
    """xyz = v/|v| · expm1(|v|): the direction is learned freely, the distance grows exponentially."""
    norm = v.norm(dim=-1, keepdim=True)
    return v / norm.clamp_min(1e-8) * torch.expm1(norm)
