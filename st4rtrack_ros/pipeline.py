"""The front door: a ready :class:`~st4rtrack_ros.tracking.tracker.OnlineTracker` from parameters.

One place resolves the checkpoint (empty = the embedded default), the device (empty = CUDA when available), the
camera-to-model fit, the engine options, the adaptation worker and resuming its saved weights, so the node, the
command-line tools and the benchmarks run the same tracker. No rclpy here.

    spec = TrackerSpec.from_params(flat_params)          # dotted names, as the node's parameters / tracker.yaml
    tracker = build_tracker(spec)
    result = tracker.step(FrameInput(stamp_ns, rgb, k, depth))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from st4rtrack_ros.settings import default_checkpoint, unflatten


@dataclass
class TrackerSpec:
    """What to build. ``tracking`` and ``adaptation``: the nested sections of config/tracker.yaml, or the core's
    ``TrackerConfig`` / ``AdaptationConfig`` already made from them."""

    checkpoint: str = ""
    device: str = ""
    fit: str = "crop"
    cpu_mode: str = ""  # a model.streaming.CPU_MODES name; "" = the fastest exact options for the device
    tracking: Any = field(default_factory=dict)  # dict | TrackerConfig
    adaptation: Any = None  # dict | AdaptationConfig | None (None: no adaptation worker)

    @classmethod
    def from_params(cls, flat: Mapping[str, Any]) -> TrackerSpec:
        """From dotted parameters (``model.checkpoint``, ``tracking.window_size``, ``adaptation.lr``, ...)."""
        return cls(checkpoint=str(flat.get("model.checkpoint", "")), device=str(flat.get("model.device", "")),
                   fit=str(flat.get("model.fit", "crop")), cpu_mode=str(flat.get("model.cpu_mode", "")),
                   tracking=unflatten(flat, "tracking"),
                   adaptation=unflatten(flat, "adaptation"))

    def resolved_checkpoint(self) -> Path:
        ckpt = Path(self.checkpoint) if self.checkpoint else default_checkpoint()
        if not ckpt.exists():
            hint = "" if self.checkpoint else " (the embedded default model is not installed)"
            raise FileNotFoundError(f"checkpoint not found: {ckpt}{hint}; pass one with "
                                    "`-p model.checkpoint:=/path/to/weights.safetensors`")
        return ckpt

    def resolved_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def build_tracker(spec: TrackerSpec, *, net: torch.nn.Module | None = None,
                  log: Callable[[str], None] = lambda _m: None) -> Any:
    """Load the network (unless ``net`` is given), wrap it in the streaming engine (the fastest exact options for its
    device, or ``spec.cpu_mode`` on a CPU), add the
    adaptation worker (resuming saved weights when configured; not started) and return the OnlineTracker.

    Raises CheckpointError / AdaptedCheckpointError / FileNotFoundError / ValueError with a message for the user.
    """
    from st4rtrack_ros.adaptation.persistence import AdaptedCheckpointError
    from st4rtrack_ros.adaptation.worker import AdaptationConfig, AdaptationWorker
    from st4rtrack_ros.model.checkpoint import load_checkpoint
    from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine
    from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig

    device = spec.resolved_device()
    if net is None:
        ckpt = spec.resolved_checkpoint()
        net = load_checkpoint(ckpt, device=device)
        log(f"model {ckpt} on {device}")
    tracking = spec.tracking if isinstance(spec.tracking, TrackerConfig) else TrackerConfig.from_dict(spec.tracking)
    cfg = dataclasses.replace(tracking, fit=spec.fit)
    worker = None
    if spec.adaptation is not None:
        adapt_cfg = spec.adaptation if isinstance(spec.adaptation, AdaptationConfig) \
            else AdaptationConfig.from_dict(spec.adaptation)
        worker = AdaptationWorker(net, adapt_cfg)
        log(f"adaptation pseudo-labels: {worker.label_sources()}")
        if adapt_cfg.resume and adapt_cfg.save_path and Path(adapt_cfg.save_path).exists():
            try:
                worker.load()
                log(f"adaptation: resumed weights version {worker.version} from {adapt_cfg.save_path}")
            except AdaptedCheckpointError as e:
                log(f"adaptation: not resuming: {e}")
    options = EngineOptions.cpu_mode(spec.cpu_mode) if spec.cpu_mode and device.type == "cpu" \
        else EngineOptions.fastest(device)
    return OnlineTracker(StreamingEngine(net, options), cfg, worker)
