"""The front door: a ready :class:`~st4rtrack_ros.tracking.tracker.OnlineTracker` from parameters.

One place resolves the checkpoint (empty = the embedded default), the device (empty = CUDA when available), the
camera-to-model fit, the engine options, the adaptation worker and resuming its saved weights, so the node, the
command-line tools and the benchmarks run the same tracker. No rclpy here.

    spec = TrackerSpec.from_params(flat_params)          # dotted names, as the node's parameters / tracker.yaml
    tracker = build_tracker(spec)
    result = tracker.step(FrameInput(stamp_ns, rgb, k, depth))

Callers that need a variant say so here rather than assembling the parts themselves: explicit ``engine`` options,
an existing network (``net=``) or adaptation worker (``adapter=``) shared by several trackers, or an OnlineTracker
subclass (``tracker_cls=``). :func:`load_network` and :func:`build_worker` are the first two steps of
:func:`build_tracker`, for a caller that holds the network and the worker across many trackers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from st4rtrack_ros.settings import default_checkpoint, unflatten

if TYPE_CHECKING:
    from st4rtrack_ros.adaptation.config import LabelSource, LabelTransform
    from st4rtrack_ros.adaptation.worker import AdaptationWorker
    from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine
    from st4rtrack_ros.tracking.adaptation_port import Adapter
    from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig

T = TypeVar("T", bound="OnlineTracker")
Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass
class TrackerSpec:
    """What to build. ``tracking`` and ``adaptation``: the nested sections of config/tracker.yaml, or the core's
    ``TrackerConfig`` / ``AdaptationConfig`` already made from them."""

    checkpoint: str = ""
    device: str = ""
    fit: str = "crop"
    cpu_mode: str = ""  # a model.streaming.CPU_MODES name; "" = the fastest exact options for the device
    # torch intra-op threads on a CPU (process-wide; 0 = torch's default, one per core). Fewer threads than cores
    # leave a core to the camera driver and DDS: on the 2-core test machine one thread ran the node faster
    # (docs/benchmarks_ros.md, "Torch threads").
    cpu_threads: int = 0
    tracking: Any = field(default_factory=dict)  # dict | TrackerConfig
    adaptation: Any = None  # dict | AdaptationConfig | None (None: no adaptation worker)
    # Explicit engine options (None: ``cpu_mode`` on a CPU, else the fastest exact options for the device). For a
    # caller that must keep the network's weights in fp32 (domain adaptation trains the very network it runs).
    engine: EngineOptions | None = None
    # A hook on the adaptation worker's pseudo-labels (adaptation.config.LabelTransform; None: the labels as made).
    # Not a parameter: the robustness study's deliberate corruption (evaluation.label_corruption) comes in here.
    label_transform: LabelTransform | None = None
    # Where the worker's labels come from instead of KLT and the depth image (adaptation.config.LabelSource; None:
    # KLT). Not a parameter: the study's oracle-label upper bound (evaluation.oracle_labels) comes in here.
    label_source: LabelSource | None = None
    # The camera comes with an aligned depth image (the node's ``ros.depth_topic``): adaptation then runs the RGB-D
    # recipe unless ``adaptation.rgbd_recipe`` is off (AdaptationConfig.with_depth_input).
    depth_input: bool = False

    @classmethod
    def from_params(cls, flat: Mapping[str, Any]) -> TrackerSpec:
        """From dotted parameters (``model.checkpoint``, ``tracking.window_size``, ``adaptation.lr``, ...)."""
        return cls(checkpoint=str(flat.get("model.checkpoint", "")), device=str(flat.get("model.device", "")),
                   fit=str(flat.get("model.fit", "crop")), cpu_mode=str(flat.get("model.cpu_mode", "")),
                   cpu_threads=int(flat.get("model.cpu_threads", 0)),
                   tracking=unflatten(flat, "tracking"),
                   adaptation=unflatten(flat, "adaptation"), depth_input=bool(flat.get("ros.depth_topic", "")))

    def resolved_checkpoint(self) -> Path:
        ckpt = Path(self.checkpoint) if self.checkpoint else default_checkpoint()
        if not ckpt.exists():
            hint = "" if self.checkpoint else " (the embedded default model is not installed)"
            raise FileNotFoundError(f"checkpoint not found: {ckpt}{hint}; pass one with "
                                    "`-p model.checkpoint:=/path/to/weights.safetensors`")
        return ckpt

    def resolved_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def tracker_config(self) -> TrackerConfig:
        """The tracker's configuration: ``tracking`` with this spec's ``fit``."""
        from st4rtrack_ros.tracking.tracker import TrackerConfig

        tracking = self.tracking if isinstance(self.tracking, TrackerConfig) else TrackerConfig.from_dict(self.tracking)
        return dataclasses.replace(tracking, fit=self.fit)

    def engine_options(self, device: torch.device) -> EngineOptions:
        from st4rtrack_ros.model.streaming import EngineOptions

        if self.engine is not None:
            return self.engine
        return EngineOptions.cpu_mode(self.cpu_mode) if self.cpu_mode and device.type == "cpu" \
            else EngineOptions.fastest(device)


def load_network(spec: TrackerSpec, log: Log = _quiet) -> torch.nn.Module:
    """The network of ``spec.checkpoint`` on ``spec.device`` (CheckpointError / FileNotFoundError otherwise)."""
    from st4rtrack_ros.model.checkpoint import load_checkpoint

    device = spec.resolved_device()
    ckpt = spec.resolved_checkpoint()
    if spec.cpu_threads > 0 and device.type == "cpu":
        torch.set_num_threads(spec.cpu_threads)
    net = load_checkpoint(ckpt, device=device)
    log(f"model {ckpt} on {device}" + (f", {torch.get_num_threads()} torch threads" if device.type == "cpu" else ""))
    return net


def build_worker(spec: TrackerSpec, net: torch.nn.Module, log: Log = _quiet) -> AdaptationWorker | None:
    """The adaptation worker of ``spec.adaptation`` on ``net`` (None without one), its saved weights resumed when
    configured; not started. Build it before any engine runs ``net``: the worker keeps the base weights as they are
    now (an engine with ``bf16_weights`` casts them in place)."""
    from st4rtrack_ros.adaptation.config import AdaptationConfig
    from st4rtrack_ros.adaptation.persistence import AdaptedCheckpointError
    from st4rtrack_ros.adaptation.worker import AdaptationWorker

    if spec.adaptation is None:
        return None
    adapt_cfg = spec.adaptation if isinstance(spec.adaptation, AdaptationConfig) \
        else AdaptationConfig.from_dict(spec.adaptation)
    if spec.depth_input:
        adapt_cfg = adapt_cfg.with_depth_input()
    worker = AdaptationWorker(net, adapt_cfg, label_transform=spec.label_transform, label_source=spec.label_source)
    log(f"adaptation pseudo-labels: {worker.label_sources()}")
    if adapt_cfg.resume and adapt_cfg.save_path and Path(adapt_cfg.save_path).exists():
        try:
            worker.load()
            log(f"adaptation: resumed weights version {worker.version} from {adapt_cfg.save_path}")
        except AdaptedCheckpointError as e:
            log(f"adaptation: not resuming: {e}")
    return worker


def build_tracker(spec: TrackerSpec, *, net: torch.nn.Module | None = None, adapter: Adapter | None = None,
                  tracker_cls: Callable[[StreamingEngine, TrackerConfig, Adapter | None], T] | None = None,
                  log: Log = _quiet) -> T:
    """Load the network (unless ``net`` is given; its device then wins over ``spec.device``), wrap it in the
    streaming engine (``spec.engine``, else the fastest exact options for its device, or ``spec.cpu_mode`` on a
    CPU), add the adaptation worker (``adapter`` when given, e.g. one worker shared by the trackers of several bags;
    else built from ``spec.adaptation``, resuming saved weights when configured; not started) and return the tracker:
    an OnlineTracker, or what ``tracker_cls(engine, config, adapter)`` makes (a subclass, or a partial of one).

    Raises CheckpointError / AdaptedCheckpointError / FileNotFoundError / ValueError with a message for the user.
    """
    from st4rtrack_ros.model.streaming import StreamingEngine
    from st4rtrack_ros.tracking.tracker import OnlineTracker

    if net is None:
        net = load_network(spec, log)
    device = next(net.parameters()).device
    cfg = spec.tracker_config()
    worker = adapter if adapter is not None else build_worker(spec, net, log)
    make = tracker_cls if tracker_cls is not None else OnlineTracker
    return make(StreamingEngine(net, spec.engine_options(device)), cfg, worker)  # type: ignore[return-value]
