#!/usr/bin/env python3
"""Score any checkpoint on a training run's fixed validation set (`training.loop.validate_checkpoint`, the run's own
`Trainer.evaluate`), so models trained with different data settings can be compared on each other's validation sets.

  .venv/bin/python experiments/validate_checkpoint.py st4rtrack_ros/weights/default_train_config.json \
      st4rtrack_ros/weights/default.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.training.config import TrainConfig
from st4rtrack_ros.training.loop import validate_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_config", type=Path, help="train_config.json of the run whose validation set to use")
    ap.add_argument("checkpoint", type=Path)
    args = ap.parse_args()
    cfg = TrainConfig.from_dict(json.loads(args.train_config.read_text()))
    metrics = validate_checkpoint(cfg, args.checkpoint)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))


if __name__ == "__main__":
    main()
