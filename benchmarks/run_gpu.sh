#!/usr/bin/env bash
# One prepared GPU session (torch + numpy only; no ROS there): correctness checks, then the benchmarks.
# Usage on the GPU machine, from the repo root:  OUT=/some/dir GOLDEN=path/to/golden bash benchmarks/run_gpu.sh
# Results land in $OUT as JSON + Markdown; copy the numbers into docs/benchmarks.md.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
status=0
python3 benchmarks/gpu_check.py ${GOLDEN:+--golden "$GOLDEN"} 2>&1 | tee "$OUT/gpu_check.txt" || status=1
python3 benchmarks/bench_model.py --preset vitl_512 --device cuda --iters 50 --json "$OUT/bench_model_vitl.json" \
  2>&1 | tee "$OUT/bench_model_vitl.md" || status=1
python3 benchmarks/bench_model.py --preset small_256 --device cuda --iters 50 --json "$OUT/bench_model_small.json" \
  2>&1 | tee "$OUT/bench_model_small.md" || status=1
if [ -f benchmarks/bench_losses.py ]; then
  python3 benchmarks/bench_losses.py --device cuda --json "$OUT/bench_losses.json" 2>&1 | tee "$OUT/bench_losses.md" \
    || status=1
fi
if [ "${COMPILE:-0}" = "1" ]; then
  timeout 180 python3 benchmarks/bench_model.py --preset vitl_512 --device cuda --iters 30 --batches --compile \
    --json "$OUT/bench_model_vitl_compile.json" 2>&1 | tee "$OUT/bench_model_vitl_compile.md" || status=1
fi
exit $status
