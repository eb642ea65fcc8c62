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

CPU paths (measured in docs/benchmarks.md, "CPU precision modes"; named sets in ``CPU_MODES``):

- ``channels_last_heads=True`` applies on the CPU too: oneDNN then runs the DPT convolutions in NHWC without
  reordering every activation (same numbers as NCHW to ~1e-7);
- ``bf16_heads=True`` (with bf16): the DPT heads' convolutions also run under bf16 autocast (AVX-512 BF16), which
  they dominate (4.9 of 6.8 GFLOP a small_256 step); the output parameterisation (exp, expm1) stays fp32;
- ``int8_linear=True`` (fp32, CPU): the Linear layers of encoder and decoders run as dynamic int8 (VNNI) on a
  quantised copy of the network, rebuilt when the weights change (background adaptation writes into them).

The forward itself has no host synchronisation (no ``.item()``, no data-dependent branches), which is what lets a
CUDA graph capture it; a test runs it on the meta device to prove that.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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
    bf16_heads: bool = False  # with bf16: the DPT heads under autocast too (else they run in fp32)
    int8_linear: bool = False  # CPU, fp32: Linear layers as dynamic int8 on a quantised copy of the network

    @classmethod
    def fastest(cls, device: torch.device | str) -> EngineOptions:
        """The options measured fastest on the device kind (docs/benchmarks.md); plain fp32 on the CPU.

        The faster CPU sets are opt-in (``cpu_mode``): they change the numbers (bf16, int8) or the model's memory
        layout (NHWC heads).
        """
        if torch.device(device).type != "cuda":
            return cls()
        return cls(precision="bf16", cuda_graph=True, bf16_weights=True, channels_last_heads=True,
                   parallel_decoders=True)

    @classmethod
    def cpu_mode(cls, name: str) -> EngineOptions:
        """A named CPU option set (``CPU_MODES``), e.g. ``"bf16+nhwc"``."""
        try:
            return CPU_MODES[name]
        except KeyError:
            raise ValueError(f"unknown CPU mode {name!r}; known: {sorted(CPU_MODES)}") from None

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.bf16_weights and self.precision != "bf16":
            raise ValueError("bf16_weights needs precision='bf16'")
        if self.bf16_heads and self.precision != "bf16":
            raise ValueError("bf16_heads needs precision='bf16'")
        # Dynamic int8 Linear takes fp32 activations only; the quantised copy is rebuilt on weight changes, which a
        # captured graph or a compiled function would not follow.
        if self.int8_linear and (self.precision != "fp32" or self.cuda_graph or self.compile):
            raise ValueError("int8_linear needs precision='fp32' and no cuda_graph/compile")


#: The CPU option sets that benchmarks/bench_cpu_precision.py compares (docs/benchmarks.md).
CPU_MODES: dict[str, EngineOptions] = {
    "fp32": EngineOptions(),
    "fp32+nhwc": EngineOptions(channels_last_heads=True),
    "int8-linear+nhwc": EngineOptions(int8_linear=True, channels_last_heads=True),
    "bf16-enc-dec": EngineOptions(precision="bf16"),
    "bf16+nhwc": EngineOptions(precision="bf16", bf16_heads=True, channels_last_heads=True),
}


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
        if self.options.channels_last_heads:  # in place: the parameters stay the ones adaptation writes into
            net.downstream_head1.to(memory_format=torch.channels_last)
            net.downstream_head2.to(memory_format=torch.channels_last)
        # Walked once: net.parameters() recurses the module tree, and the version check runs every step.
        # Adaptation and every other writer update these tensors in place, so the tuple stays valid.
        self._params = tuple(net.parameters())
        self._anchor_tokens: torch.Tensor | None = None
        # The last frame's encoder tokens: (frame tensor, its in-place version, weights version, tokens (B, N, D)).
        self._last_encoded: tuple[torch.Tensor, int, int, torch.Tensor] | None = None
        self._graphs: dict[int, _CapturedStep] = {}
        self._graph_failed = False
        if self.options.bf16_heads:
            for head in (net.downstream_head1, net.downstream_head2):
                if not getattr(head.dpt, "_fp32_output_hooked", False):  # once per network, however many engines
                    head.dpt.register_forward_hook(_fp32_output)
                    head.dpt._fp32_output_hooked = True
        self._int8: St4RTrackNet | None = None  # the quantised copy (int8_linear)
        self._int8_version = -1  # self.net's weight version it was built from
        if self.options.int8_linear:
            if self.device.type != "cpu":
                raise ValueError("int8_linear runs on the CPU only")
            self._refresh_int8()
        self._encode: Callable[[torch.Tensor], torch.Tensor]
        self._decode_heads: Callable[..., PairOutput]
        self._encode, self._decode_heads = self._eager_fns()
        self._side_stream = (torch.cuda.Stream(self.device) if self.options.parallel_decoders
                             and self.device.type == "cuda" and not self.options.compile else None)
        self._compiled = False
        if self.options.compile:
            try:
                self._encode = torch.compile(self._encode, dynamic=False)
                self._decode_heads = torch.compile(self._decode_heads, dynamic=False)
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
            (self._encode, self._decode_heads), self._compiled = self._eager_fns(), False
            return fn()

    # -- the CPU paths -------------------------------------------------------------------------------------------

    def _eager_fns(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[..., PairOutput]]:
        """(encode, decoders + heads) of the model that runs the step (the int8 copy, or the network itself)."""
        model = self._int8 if self._int8 is not None else self.net
        return model.encode, (self._forward_tokens_bf16_heads if self.options.bf16_heads else model.forward_tokens)

    def _forward_tokens_bf16_heads(self, tok1: torch.Tensor, tok2: torch.Tensor, grid_hw: tuple[int, int],
                                   side_stream: torch.cuda.Stream | None = None, recon: bool = True) -> PairOutput:
        """``forward_tokens`` with the DPT heads left under the caller's bf16 autocast (``net.heads`` turns it off).

        Each head's adapter returns bf16 (B, 4, H, W); a forward hook (``_fp32_output``) makes it fp32 before
        ``DPTHead`` applies exp/expm1, so points (B, H, W, 3) and confidence (B, H, W) come out fp32.
        """
        net = self.net
        dec1, dec2 = net.decode(tok1, tok2, grid_hw, side_stream)
        pts1, conf1 = net.downstream_head1(dec1, grid_hw)
        pts2, conf2 = net.downstream_head2(dec2, grid_hw) if recon else (None, None)
        return PairOutput(track_pts=pts1, track_conf=conf1, recon_pts=pts2, recon_conf=conf2)

    def _weights_version(self) -> int:
        """Changes whenever any parameter is written in place (``Tensor._version``): adaptation's ``copy_``."""
        return sum(p._version for p in self._params)

    def _refresh_int8(self) -> None:
        """(Re)build the dynamic-int8 copy of the network if its weights changed since the last build."""
        version = self._weights_version()
        if version == self._int8_version:
            return
        # decoder_embed stays a float Linear: the network reads its weight's dtype for the RoPE tables.
        names = {n for n, m in self.net.named_modules() if isinstance(m, nn.Linear) and n != "decoder_embed"}
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices, once per build
            warnings.simplefilter("ignore")
            self._int8 = torch.ao.quantization.quantize_dynamic(self.net, names, dtype=torch.qint8, inplace=False)
        self._int8_version = version
        self._encode, self._decode_heads = self._eager_fns()

    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N, D) of ``frames`` (B, 3, H, W). Re-anchoring on the frame just stepped passes the
        same tensor to ``set_anchor`` and then ``step``: it is encoded once, not three times (the same computation,
        so the outputs are unchanged). Not under CUDA graphs, whose outputs live in buffers the next replay reuses."""
        last = self._last_encoded
        version = self._weights_version()
        frame_version = _version_of(frames)
        if last is not None and last[0] is frames and last[1] == frame_version and last[2] == version:
            return last[3]
        tokens = self._encode(frames)
        if not (self.options.cuda_graph and self.device.type == "cuda"):
            self._last_encoded = (frames, frame_version, version, tokens)
        return tokens

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
        if self._int8 is not None:
            self._refresh_int8()
        anchor = anchor.to(self.device)
        if anchor.dim() == 3:
            anchor = anchor[None]
        if self.options.cache_anchor:
            with self._autocast():
                tokens = self._with_compile_fallback(lambda: self._encode_frames(anchor))
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
        self._last_encoded = None
        self._graphs.clear()

    # -- the per-frame step ---------------------------------------------------------------------------------------

    def _step_eager(self, frames: torch.Tensor, recon: bool = True) -> PairOutput:
        assert self._anchor_tokens is not None
        grid = self.net.grid_hw(frames)
        b = frames.shape[0]
        with self._autocast():
            if self.options.cache_anchor:
                tokens = self._encode_frames(frames)
                anchor = self._anchor_tokens.expand(b, -1, -1)
            else:
                both = self._encode(torch.cat((self._anchor_tokens.expand(b, -1, -1, -1), frames)))
                anchor, tokens = both[:b], both[b:]
            if not recon:  # eager only: a compiled function would recompile for the other value
                return self._eager_fns()[1](anchor, tokens, grid, self._side_stream, recon=False)
            return self._decode_heads(anchor, tokens, grid, self._side_stream)

    @torch.inference_mode()
    def step(self, frames: torch.Tensor, recon: bool = True) -> PairOutput:
        """Predictions for (anchor, frame) pairs; ``frames`` (B, 3, H, W) or (3, H, W) in [-1, 1].

        ``recon=False``: head 2 (reconstruction) is not run and its maps are None — about a third of a small_256
        step on the CPU. Such a step runs eagerly (no CUDA graph, no compiled function), with the same numbers."""
        if self._anchor_tokens is None:
            raise RuntimeError("set_anchor() must be called before step()")
        frames = frames.to(self.device)
        if frames.dim() == 3:
            frames = frames[None]
        if tuple(frames.shape[-2:]) != self._anchor_hw:
            raise ValueError(f"frame size {tuple(frames.shape[-2:])} differs from the anchor's {self._anchor_hw}")
        if self._int8 is not None:
            self._refresh_int8()
        if not recon:
            return self._step_eager(frames, recon=False)
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


def _version_of(t: torch.Tensor) -> int:
    """``t``'s in-place write counter; -1 for an inference-mode tensor, which has none (it can be written in place
    only inside inference mode, which the tracker never does to a frame it has stepped)."""
    return -1 if t.is_inference() else t._version


def _fp32_output(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on a DPT adapter: its raw map (B, 4, H, W) in fp32 (a no-op on the default fp32 path)."""
    return output.float()


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
