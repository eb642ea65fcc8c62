"""The St4RTrack network: shared RoPE ViT encoder, two cross-attending decoders, two DPT heads.

Head 1 (branch 1, the anchor side) predicts the *tracking* pointmap: where the anchor's pixels are at the time of
frame j. Head 2 (branch 2) predicts the *reconstruction* pointmap: what frame j sees. Both are expressed in the
anchor camera's frame (OpenCV axes). Module names match the official state dict.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import DecoderBlock, EncoderBlock
from .config import ModelConfig
from .dpt import DPTHead
from .rope import rope_tables
from .uncertainty import sigma2_from_conf

#: Named trainable subsets (``St4RTrackNet.subset_names``), from the smallest to the whole network.
PARAM_SETS = ("track_head", "recon_head", "heads", "heads+last_decoder", "decoders+heads", "all")


@dataclass
class PairOutput:
    """Per-pixel predictions for a batch of (anchor, frame j) pairs, all (B, H, W[, 3]) float32. The recon maps
    are None only when the caller asked for head 1 alone (``recon=False``: re-anchoring needs the new anchor's own
    tracking pointmap, not its reconstruction)."""

    track_pts: torch.Tensor
    track_conf: torch.Tensor
    recon_pts: torch.Tensor | None
    recon_conf: torch.Tensor | None

    @property
    def track_sigma2(self) -> torch.Tensor:
        return sigma2_from_conf(self.track_conf)

    @property
    def recon_sigma2(self) -> torch.Tensor:
        if self.recon_conf is None:
            raise ValueError("head 2 was not run (recon=False)")
        return sigma2_from_conf(self.recon_conf)

    def maps(self) -> list[torch.Tensor]:
        """The maps that were computed (the recon pair only when head 2 ran)."""
        return [t for t in (self.track_pts, self.track_conf, self.recon_pts, self.recon_conf) if t is not None]


def _compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """The dtype attention runs in: autocast's when it is on, else the weights'."""
    if device.type in ("cuda", "cpu") and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.proj(img).flatten(2).transpose(1, 2)


class St4RTrackNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_embed_dim))  # kept for checkpoint compatibility
        self.patch_embed = PatchEmbed(c.patch_size, c.enc_embed_dim)
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(c.enc_embed_dim, c.enc_num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(c.enc_embed_dim, eps=c.norm_eps)
        self.decoder_embed = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.dec_depth)
        )
        self.dec_blocks2 = nn.ModuleList(
            DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(c.dec_embed_dim, eps=c.norm_eps)
        head_kw = dict(
            token_dims=(c.enc_embed_dim, c.dec_embed_dim, c.dec_embed_dim, c.dec_embed_dim),
            layer_dims=c.layer_dims,
            feature_dim=c.feature_dim,
            last_dim=c.last_dim,
            out_channels=c.out_channels,
            patch_size=c.patch_size,
        )
        self.downstream_head1 = DPTHead(c.dpt_hooks, **head_kw)
        self.downstream_head2 = DPTHead(c.dpt_hooks, **head_kw)
        # Activation checkpointing of the transformer blocks (set by training, e.g. for vitl_512): in training mode
        # with gradients on, each block's activations are recomputed in the backward pass instead of being kept.
        # Not a weight or config entry: checkpoints and inference are unaffected.
        self.grad_checkpoint = False

    def _block(self, blk: nn.Module, *args: object) -> torch.Tensor:
        """One encoder/decoder block; checkpointed only when ``grad_checkpoint`` is set and a graph is recorded."""
        if self.grad_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)

    # -- pieces, used separately by the streaming engine -------------------------------------------------------

    def grid_hw(self, img: torch.Tensor) -> tuple[int, int]:
        p = self.config.patch_size
        return img.shape[-2] // p, img.shape[-1] // p

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → encoder tokens (B, N, enc_dim), after ``enc_norm``."""
        grid = self.grid_hw(img)
        rope = rope_tables(grid, self.config.enc_embed_dim // self.config.enc_num_heads, self.config.rope_freq,
                           img.device, _compute_dtype(img.device, self.patch_embed.proj.weight))
        x = self.patch_embed(img)
        for blk in self.enc_blocks:
            x = self._block(blk, x, rope)
        return self.enc_norm(x)

    def decode(
        self, tok1: torch.Tensor, tok2: torch.Tensor, grid_hw: tuple[int, int],
        side_stream: torch.cuda.Stream | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both branches in lockstep; block i of each branch reads both branches' outputs of block i-1.

        With ``side_stream`` (CUDA), branch 2 of each layer runs on it, concurrently with branch 1: at batch 1 one
        branch's kernels leave most of the GPU idle.

        Returns, per branch, [encoder tokens, decoder layer 1, ..., dec_norm(layer d)] — the list the DPT hooks
        index into.
        """
        rope = rope_tables(grid_hw, self.config.dec_embed_dim // self.config.dec_num_heads, self.config.rope_freq,
                           tok1.device, _compute_dtype(tok1.device, self.decoder_embed.weight))
        out1, out2 = [tok1], [tok2]
        x1, x2 = self.decoder_embed(tok1), self.decoder_embed(tok2)
        side = side_stream if tok1.is_cuda else None
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2, strict=True):
            if side is None:
                x1, x2 = self._block(blk1, x1, x2, rope), self._block(blk2, x2, x1, rope)
            else:  # the branches are independent within a layer: run branch 2 concurrently on a side stream
                main = torch.cuda.current_stream(tok1.device)
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    y2 = blk2(x2, x1, rope)
                x1 = blk1(x1, x2, rope)
                main.wait_stream(side)
                y2.record_stream(main)  # allocated on the side stream, used on the main one from here on
                x2 = y2
            out1.append(x1)
            out2.append(x2)
        out1[-1] = self.dec_norm(out1[-1])
        out2[-1] = self.dec_norm(out2[-1])
        return out1, out2

    def heads(self, dec1: list[torch.Tensor], dec2: list[torch.Tensor], grid_hw: tuple[int, int],
              recon: bool = True) -> PairOutput:
        """DPT heads in fp32 whatever autocast says outside: pointmap precision matters more than speed here.
        ``recon=False`` skips head 2 (its maps are None)."""
        dev = dec1[0].device.type
        with torch.autocast(dev, enabled=False) if dev in ("cuda", "cpu") else contextlib.nullcontext():
            pts1, conf1 = self.downstream_head1([t.float() for t in dec1], grid_hw)
            pts2, conf2 = self.downstream_head2([t.float() for t in dec2], grid_hw) if recon else (None, None)
        return PairOutput(track_pts=pts1, track_conf=conf1, recon_pts=pts2, recon_conf=conf2)

    def forward_tokens(self, tok1: torch.Tensor, tok2: torch.Tensor, grid_hw: tuple[int, int],
                       side_stream: torch.cuda.Stream | None = None, recon: bool = True) -> PairOutput:
        dec1, dec2 = self.decode(tok1, tok2, grid_hw, side_stream)
        return self.heads(dec1, dec2, grid_hw, recon)

    # -- the pair forward (the official protocol: both images encoded) ---------------------------------------

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> PairOutput:
        """img1 = anchor, img2 = frame j, both (B, 3, H, W) normalised to [-1, 1]."""
        if img1.shape != img2.shape:
            raise ValueError(f"anchor and frame must have the same shape, got {tuple(img1.shape)} and "
                             f"{tuple(img2.shape)}")
        b = img1.shape[0]
        tokens = self.encode(torch.cat((img1, img2), dim=0))
        return self.forward_tokens(tokens[:b], tokens[b:], self.grid_hw(img1))

    def subset_names(self, subset: str) -> list[str]:
        """Names of the parameters of a trainable subset (one of ``PARAM_SETS``; alias keys resolved: each once).

        One definition for training (``--train-params``) and adaptation (``adaptation.params``), so that a subset
        means the same tensors in both. ``recon_head`` leaves every input of head 1 untouched: with it, training or
        adapting cannot change the tracking pointmaps.
        """
        if subset not in PARAM_SETS:
            raise ValueError(f"parameter subset must be one of {PARAM_SETS}, got {subset!r}")
        last = self.config.dec_depth - 1
        decoders = ["decoder_embed.", "dec_blocks.", "dec_blocks2.", "dec_norm."]
        prefixes = {
            "track_head": ["downstream_head1."],
            "recon_head": ["downstream_head2."],
            "heads": ["downstream_head1.", "downstream_head2."],
            "heads+last_decoder": ["downstream_head1.", "downstream_head2.", f"dec_blocks.{last}.",
                                   f"dec_blocks2.{last}.", "dec_norm."],
            "decoders+heads": ["downstream_head1.", "downstream_head2.", *decoders],
        }.get(subset)
        names = [n for n, _ in self.named_parameters()]
        return names if prefixes is None else [n for n in names if n.startswith(tuple(prefixes))]

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups for adaptation subsets (encoder is frozen in official training)."""
        return {
            "encoder": [*self.patch_embed.parameters(), *self.enc_blocks.parameters(), *self.enc_norm.parameters()],
            "decoders": [*self.decoder_embed.parameters(), *self.dec_blocks.parameters(),
                         *self.dec_blocks2.parameters(), *self.dec_norm.parameters()],
            "heads": [*self.downstream_head1.parameters(), *self.downstream_head2.parameters()],
        }
