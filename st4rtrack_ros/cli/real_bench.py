"""``st4rtrack-real-bench --out DIR``: the real-data benchmark (``evaluation.real_benchmark``): a checkpoint on every
real camera bag and on held-out synthetic bags, with the harness's baselines, in one table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from st4rtrack_ros.data.bag_io import synthetic_bag
from st4rtrack_ros.evaluation import real_benchmark as rb
from st4rtrack_ros.evaluation.real_benchmark_report import table, write_tables
from st4rtrack_ros.pipeline import TrackerSpec, load_network
from st4rtrack_ros.settings import load_section
from st4rtrack_ros.tracking.tracker import TrackerConfig


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="st4rtrack-real-bench",
                                 description=rb.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for real_benchmark.{json,md} and <bag>.png")
    ap.add_argument("--checkpoint", type=Path, help="model weights (default: the embedded default model)")
    ap.add_argument("--frames", type=int, default=64, help="first N frames of each bag (default 64)")
    ap.add_argument("--data", type=Path, default=None,
                    help=f"real bags folder (default ${rb.REAL_DATA_ENV} or ../shared/data/real beside the repository)")
    ap.add_argument("--bags", nargs="*", default=None, help="only these real bags (folder names)")
    ap.add_argument("--presets", nargs="*", default=list(rb.SYNTH_PRESETS), help="synthetic presets (none: skip)")
    ap.add_argument("--seed", type=int, default=rb.SYNTH_SEED, help="synthetic scene seed (held out: 1000+)")
    ap.add_argument("--work", type=Path, default=Path("out/real_benchmark_bags"), help="synthetic bag cache")
    ap.add_argument("--modes", nargs="+", choices=rb.MODES, default=list(rb.MODES), help="modes of the real bags")
    ap.add_argument("--synthetic-modes", nargs="+", choices=rb.MODES, default=list(rb.MODES),
                    help="modes of the synthetic bags")
    ap.add_argument("--render", type=Path, help="only rewrite the tables of this real_benchmark.json into --out")
    ap.add_argument("--config", type=Path, help="YAML parameters file (its tracking section)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 is several times faster on a busy shared CPU)")
    ap.add_argument("--ignore-camera-info", action="store_true",
                    help="the tracker estimates K from the pointmap even where the bag has CameraInfo")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:  # the tables again from stored results, no model run
        entries = json.loads(args.render.read_text())["bags"]
        write_tables(args.out, table(entries))
        return 0
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    spec = TrackerSpec(checkpoint=str(args.checkpoint or ""), device=str(device))
    ckpt = spec.resolved_checkpoint()
    net = load_network(spec).eval()
    tracker_cfg = TrackerConfig.from_dict(load_section(args.config, "tracking")) if args.config else TrackerConfig()
    data = args.data or rb.default_real_dir()
    bags = [(b, "real") for b in rb.find_bags(data) if args.bags is None or b.name in args.bags]
    if not bags:
        print(f"[real-bench] no real bags under {data}: synthetic presets only", file=sys.stderr)
    bags += [(synthetic_bag(args.work, p, args.seed, args.frames, rb.SYNTH_SIZE), "synthetic") for p in args.presets]
    torch.manual_seed(0)
    entries = [rb.evaluate_bag(net, bag, kind, args.frames, device, args.out,
                               tuple(args.modes if kind == "real" else args.synthetic_modes), tracker_cfg,
                               not args.ignore_camera_info)
               for bag, kind in bags]
    lines = table(entries)
    meta = {"checkpoint": str(ckpt), "frames": args.frames, "device": str(device), "data": str(data),
            "modes": args.modes, "synthetic_modes": args.synthetic_modes,
            "camera_info": not args.ignore_camera_info, "synthetic_seed": args.seed,
            "torch_threads": torch.get_num_threads(),
            "tracker": dataclasses.asdict(tracker_cfg),
            "command": "st4rtrack-real-bench " + " ".join(argv or sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_benchmark.json").write_text(json.dumps({"meta": meta, "bags": entries, "table": lines},
                                                             indent=1, default=str))  # dtypes in the config
    write_tables(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
