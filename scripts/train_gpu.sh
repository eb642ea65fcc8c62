#!/usr/bin/env bash
# Supervised pretraining on the lent GPU machine (torch + numpy + opencv + matplotlib + scipy + safetensors there; no
# ROS, no install). From the repo root:
#   OUT=/some/dir TIME_BUDGET_S=420 bash scripts/train_gpu.sh [extra st4rtrack-train flags]
# The run directory (optimizer state, fp32 checkpoint) stays in $RUN_DIR on the machine; $OUT receives what the
# device channel can return (files ≤ 16 MiB, ≤ 8 files): the fp16 model in ≤ 15 MiB shards, the JSON-lines log, the
# loss curves, the configuration and the console log. Load the model here with
#   load_checkpoint("$OUT/model.safetensors")   (any shard name works too)
# The `photo` preset reads real photographs (st4rtrack_ros/data/photos.py). The GPU machine has no scikit-image:
# copy its image folder into the work tree first (git-ignored out/ travels with `carry`), e.g.
#   cp -r .venv/lib/python3.11/site-packages/skimage/data out/photos   # then run with carry: ["out/photos"]
set -uo pipefail
OUT=${OUT:-out/train_gpu}
RUN_DIR=${RUN_DIR:-/tmp/st4r_train}
TIME_BUDGET_S=${TIME_BUDGET_S:-420}   # training-loop wall time; add ~60 s for start-up, validation and export
PRESET=${PRESET:-small_256}
BATCH=${BATCH:-32}
PAIRS_PER_SEQ=${PAIRS_PER_SEQ:-4}
STEPS=${STEPS:-4000}                  # schedule length; --budget-schedule finishes the decay when time runs out
LR=${LR:-3e-4}
WORKERS=${WORKERS:-$(( $(nproc) - 2 ))}
# POOL=0: every pair fresh (~80 pairs/s on 14 workers, data-bound). POOL=N: N sequences rendered once into CACHE,
# then re-read (~260 pairs/s at batch 32 on the H200): more steps, fewer distinct scenes.
POOL=${POOL:-1500}
CACHE=${CACHE:-/tmp/st4r_cache}
# Training mixture: the four procedural presets plus photographs with JPEG (a third of the scenes), lens distortion.
DATA_PRESETS=${DATA_PRESETS:-easy,occlusion,fast,shift,photo,photo}
LENS_K1=${LENS_K1:-0.15}
export ST4R_PHOTO_DIR=${ST4R_PHOTO_DIR:-$PWD/out/photos}
[ -d "$ST4R_PHOTO_DIR" ] || unset ST4R_PHOTO_DIR   # fall back to an installed scikit-image wheel
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
resume=()
[ -f "$RUN_DIR/ckpt/last_state.pt" ] && resume=(--resume)
$PY -m st4rtrack_ros.cli.train --out "$RUN_DIR" "${resume[@]}" --preset "$PRESET" --batch-size "$BATCH" \
  --pairs-per-seq "$PAIRS_PER_SEQ" --steps "$STEPS" --lr "$LR" --warmup-steps 200 --num-workers "$WORKERS" \
  --time-budget-s "$TIME_BUDGET_S" --budget-schedule --eval-every 250 --n-val-groups 32 --ckpt-every 500 \
  --log-every 25 --export-dtype fp16 --max-shard-mib 15 --pool-groups "$POOL" --cache-dir "$CACHE" \
  --data-presets "$DATA_PRESETS" --lens-k1 "$LENS_K1" "$@" 2>&1 \
  | tee "$OUT/train.log"
status=${PIPESTATUS[0]}
cp "$RUN_DIR"/model*.safetensors "$RUN_DIR/log.jsonl" "$RUN_DIR/train_config.json" "$OUT"/ 2>/dev/null
cp "$RUN_DIR/loss_curves.png" "$OUT"/ 2>/dev/null
# the export must load back (fp16 → fp32) before we call the run a success
$PY - "$OUT" <<'PY' || status=1
import sys, torch
from st4rtrack_ros.model.checkpoint import load_checkpoint
net = load_checkpoint(f"{sys.argv[1]}/model.safetensors")
print("export loads:", net.config.img_size, sum(p.numel() for p in net.parameters()), "params")
PY
ls -l "$OUT"
exit $status
