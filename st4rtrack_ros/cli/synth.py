"""``st4rtrack-synth OUT [--preset P --frames N --seed S ...]``: render a synthetic benchmark sequence with ground
truth into a rosbag2 bag (``data.sequence`` renders, ``data.bag_io`` writes)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from st4rtrack_ros.data.bag_format import COMPRESSED_FORMATS, DEFAULT_STORAGE, IMAGE_ENCODINGS, STORAGE_IDS
from st4rtrack_ros.data.bag_io import write_sequence
from st4rtrack_ros.data.presets import PRESETS, get_preset
from st4rtrack_ros.data.sequence import make_sequence


def parse_size(text: str) -> tuple[int, int]:
    """'256x160' → (256, 160)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x160, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError("width and height must be >= 8")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    """Argument parser (kept separate so tests and docs can inspect it)."""
    p = argparse.ArgumentParser(
        prog="st4rtrack-synth",
        description="Render a deterministic synthetic dynamic scene (preset + seed) with ground-truth depth, "
        "camera poses and 3D tracks into a benchmark rosbag2 bag (see docs/bag-format.md).",
    )
    p.add_argument("out", type=Path, help="output bag directory (must not exist unless --overwrite)")
    p.add_argument("--preset", default="easy", choices=sorted(PRESETS), help="scene family (default: easy)")
    p.add_argument("--frames", type=int, default=64, help="number of frames (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    p.add_argument("--size", type=parse_size, default=(256, 160), help="WIDTHxHEIGHT (default: 256x160)")
    p.add_argument("--fps", type=float, default=None, help="frame rate; default: the preset's")
    p.add_argument("--cam-speed", type=float, default=None, help="camera forward speed m/s; default: the preset's")
    p.add_argument("--tracks", type=int, default=1024, help="query tracks sampled on frame 0 (default: 1024)")
    p.add_argument("--object-tracks", type=int, default=256, help="extra tracks on moving objects (default: 256)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, choices=STORAGE_IDS, help="bag storage (default: mcap)")
    p.add_argument(
        "--transport",
        default="raw",
        choices=("raw", *COMPRESSED_FORMATS),
        help="raw sensor_msgs/Image or CompressedImage jpeg/png (default: raw)",
    )
    p.add_argument("--encoding", default="rgb8", choices=IMAGE_ENCODINGS, help="raw image encoding (default: rgb8)")
    p.add_argument("--no-gt", action="store_true", help="write only camera topics (no /gt/*)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.frames < 1:
        print("st4rtrack-synth: --frames must be >= 1", file=sys.stderr)
        return 2
    if args.out.exists():
        if not args.overwrite:
            print(f"st4rtrack-synth: {args.out} exists (use --overwrite)", file=sys.stderr)
            return 2
        shutil.rmtree(args.out)
    overrides: dict[str, object] = {}
    if args.fps is not None:
        overrides["fps"] = args.fps
    if args.cam_speed is not None:
        overrides["cam_speed"] = args.cam_speed
    preset = get_preset(args.preset, **overrides)
    width, height = args.size
    t0 = time.perf_counter()
    seq = make_sequence(
        preset, args.frames, args.seed, width, height, n_tracks=args.tracks, n_object_tracks=args.object_tracks
    )

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % max(1, total // 20) == 0):
            rate = done / max(time.perf_counter() - t0, 1e-9)
            print(f"\r[st4rtrack-synth] frame {done}/{total} ({rate:.1f} frames/s)", end="", file=sys.stderr)

    n = write_sequence(
        seq, args.out, storage=args.storage, transport=args.transport, encoding=args.encoding,
        ground_truth=not args.no_gt, progress=progress,
    )
    if not args.quiet:
        tr = seq.tracks
        print(
            f"\n[st4rtrack-synth] wrote {n} frames {width}x{height} preset={preset.name} seed={args.seed} "
            f"({len(seq.scene.boxes)} primitives, {int(seq.scene.dynamic_mask.sum())} moving; "
            f"{tr.n_tracks} tracks, {int(tr.dynamic.sum())} dynamic) to {args.out} "
            f"in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
