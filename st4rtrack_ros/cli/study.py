"""``st4rtrack-study CONFIG --out DIR``: St4RTrack vs St4RTrack+ under occlusion, fast motion and noisy pseudo-labels
(``evaluation.study``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from st4rtrack_ros.evaluation import study


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="st4rtrack-study", description=study.__doc__)
    ap.add_argument("config", type=Path, help="study YAML (experiments/configs/study.yaml: the full study)")
    ap.add_argument("--out", type=Path, required=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = study.StudyConfig.from_yaml(args.config)
    except (OSError, ValueError, TypeError, yaml.YAMLError) as e:
        print(f"st4rtrack-study: {e}", file=sys.stderr)
        return 2
    study.run_study(cfg, args.out)
    print(f"[study] summary: {args.out / 'study.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
