"""Streaming inference: encode the anchor once, then encode each new frame and decode it against the cache.

This is what makes the network usable online: the official protocol re-encodes both images of every pair; here
each frame costs one encoder pass, the two decoders and the two heads. Options, each with a working fallback:

- ``precision="bf16"``: bf16 autocast for the encoder and decoders on CUDA (heads always run in fp32);
- ``cuda_graph=True``: the per-frame step is captured once per batch size and replayed (no Python or launch
  overhead); the anchor cache lives in a static buffer, so a new anchor does not invalidate the graphs;
- ``compile=True``: ``torch.compile`` of the encoder and decoder+heads;
- ``bf16_weights=True`` (with bf16): store the encoder and decoder weights in bf16 instead of casting the fp32
  weights on every step (saves ~3 GB of memory traffic per ViT-L step); the engine then owns the model;
- ``channels_last_heads=True``: NHWC convolutions in the DPT heads; ``cudnn_benchmark``: let cuDNN time its
  convolution algorithms once for the fixed input size;
- ``parallel_decoders=True``: the two decoder branches of each layer run on two CUDA streams.

The forward itself has no host synchronisation (no ``.item()``, no data-dependent branches), which is what lets a
CUDA graph capture it; a test runs it on the meta device to prove that.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .network import PairOutput, St4RTrackNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    precision: str = "fp32"  # "fp32" | "bf16"
    cuda_graph: bool = False
    compile: bool = False
    # False = the official pair protocol (anchor re-encoded with every frame): the baseline the cache is measured
    # against, with the same precision/graph options.
    cache_anchor: bool = True
    bf16_weights: bool = False
    channels_last_heads: bool = False
    cudnn_benchmark: bool = True
    parallel_decoders: bool = False

    @classmethod
    def fastest(cls, device: torch.device | str) -> EngineOptions:
        """The options measured fastest on the device kind (docs/benchmarks.md); plain fp32 on the CPU."""
        if torch.device(device).type != "cuda":
            return cls()
        return cls(precision="bf16", cuda_graph=True, bf16_weights=True, channels_last_heads=True,
                   parallel_decoders=True)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.bf16_weights and self.precision != "bf16":
            raise ValueError("bf16_weights needs precision='bf16'")


class StreamingEngine:
    """Owns the inference model for one camera stream: ``set_anchor`` once per window, ``step`` per frame."""

    def __init__(self, net: St4RTrackNet, options: EngineOptions | None = None) -> None:
        self.net = net.eval()
        self.options = options or EngineOptions()
        self.device = next(net.parameters()).device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.options.cudnn_benchmark
            if self.options.bf16_weights:
                for module in (net.patch_embed, net.enc_blocks, net.enc_norm, net.decoder_embed, net.dec_blocks,
                               net.dec_blocks2, net.dec_norm):
                    module.to(torch.bfloat16)
            if self.options.channels_last_heads:
                net.downstream_head1.to(memory_format=torch.channels_last)
                net.downstream_head2.to(memory_format=torch.channels_last)
        self._anchor_tokens: torch.Tensor | None = None
        self._graphs: dict[int, _CapturedStep] = {}
        self._graph_failed = False
        self._encode: Callable[[torch.Tensor], torch.Tensor] = net.encode
        self._decode_heads: Callable[..., PairOutput] = net.forward_tokens
        self._side_stream = (torch.cuda.Stream(self.device) if self.options.parallel_decoders
                             and self.device.type == "cuda" and not self.options.compile else None)
        self._compiled = False
        if self.options.compile:
            try:
                self._encode = torch.compile(net.encode, dynamic=False)
                self._decode_heads = torch.compile(net.forward_tokens, dynamic=False)
                self._compiled = True
            except Exception as e:  # torch.compile unavailable: run eagerly
                log.warning("torch.compile unavailable, running eagerly: %s", e)

    def _with_compile_fallback(self, fn: Callable[[], object]) -> object:
        """Compilation happens at the first call; if it fails there, switch to eager for good and retry."""
        try:
            return fn()
        except Exception as e:
            if not self._compiled:
                raise
            log.warning("torch.compile failed at first use, running eagerly: %s", str(e).splitlines()[0])
            self._encode, self._decode_heads, self._compiled = self.net.encode, self.net.forward_tokens, False
            return fn()

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def has_anchor(self) -> bool:
        return self._anchor_tokens is not None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.options.precision == "bf16" and self.device.type in ("cuda", "cpu"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def set_anchor(self, anchor: torch.Tensor) -> None:
        """Encode the anchor image (1, 3, H, W) or (3, H, W) and cache its tokens."""
        anchor = anchor.to(self.device)
        if anchor.dim() == 3:
            anchor = anchor[None]
        if self.options.cache_anchor:
            with self._autocast():
                tokens = self._with_compile_fallback(lambda: self._encode(anchor))
        else:
            tokens = anchor  # pair protocol: keep the image, encode it again with every frame
        if self._anchor_tokens is not None and self._anchor_tokens.shape == tokens.shape:
            self._anchor_tokens.copy_(tokens)  # in place: captured graphs keep reading this buffer
        else:
            self._anchor_tokens = tokens.clone()
            self._graphs.clear()
        self._anchor_hw = tuple(anchor.shape[-2:])

    def reset(self) -> None:
        self._anchor_tokens = None
        self._graphs.clear()

    # -- the per-frame step ---------------------------------------------------------------------------------------

    def _step_eager(self, frames: torch.Tensor) -> PairOutput:
        assert self._anchor_tokens is not None
        grid = self.net.grid_hw(frames)
        b = frames.shape[0]
        with self._autocast():
            if self.options.cache_anchor:
                tokens = self._encode(frames)
                anchor = self._anchor_tokens.expand(b, -1, -1)
            else:
                both = self._encode(torch.cat((self._anchor_tokens.expand(b, -1, -1, -1), frames)))
                anchor, tokens = both[:b], both[b:]
            return self._decode_heads(anchor, tokens, grid, self._side_stream)

    @torch.inference_mode()
    def step(self, frames: torch.Tensor) -> PairOutput:
        """Predictions for (anchor, frame) pairs; ``frames`` (B, 3, H, W) or (3, H, W) in [-1, 1]."""
        if self._anchor_tokens is None:
            raise RuntimeError("set_anchor() must be called before step()")
        frames = frames.to(self.device)
        if frames.dim() == 3:
            frames = frames[None]
        if tuple(frames.shape[-2:]) != self._anchor_hw:
            raise ValueError(f"frame size {tuple(frames.shape[-2:])} differs from the anchor's {self._anchor_hw}")
        if self.options.cuda_graph and self.device.type == "cuda" and not self._graph_failed:
            b = frames.shape[0]
            graph = self._graphs.get(b)
            if graph is None:
                try:
                    graph = self._graphs[b] = _CapturedStep(self._step_eager, frames)
                except Exception as e:  # capture unsupported here: keep working eagerly
                    log.warning("CUDA graph capture failed, running eagerly: %s", e)
                    self._graph_failed = True
                    return self._with_compile_fallback(lambda: self._step_eager(frames))
            return graph.run(frames)
        return self._with_compile_fallback(lambda: self._step_eager(frames))


class _CapturedStep:
    """A CUDA graph of one step at a fixed batch size, with static input and output buffers."""

    def __init__(self, fn: Callable[[torch.Tensor], PairOutput], example: torch.Tensor) -> None:
        self.static_in = example.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: lets cuDNN/cuBLAS pick kernels and allocate workspaces
                fn(self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(self.static_in)

    def run(self, frames: torch.Tensor) -> PairOutput:
        self.static_in.copy_(frames)
        self.graph.replay()
        o = self.static_out
        # Clones: the next replay overwrites the static outputs, callers may keep these.
        return PairOutput(o.track_pts.clone(), o.track_conf.clone(), o.recon_pts.clone(), o.recon_conf.clone())
