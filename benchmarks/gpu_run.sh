#!/usr/bin/env bash
# Issue 17's device run (benchmarks/README.md has the exact `run` call): install the carried wheels (.whl/, made
# here by benchmarks/gpu_wheels.py), then benchmarks/gpu_all.py with this script's arguments.
# Results under $OUT: gpu_all.md, gpu_all.jsonl, gpu_all.log (this output), recipe.log (part 6).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/kolors-gpu-all}
mkdir -p "$OUT"
if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl; then
  echo "kolors: error: could not install .whl/*.whl: run benchmarks/gpu_wheels.py here and carry .whl" >&2
  exit 2
fi
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm --format=csv 2>&1 | tee "$OUT/gpu_all.log"
python3 benchmarks/gpu_all.py --out "$OUT" --drop-page-cache "$@" 2>&1 | tee -a "$OUT/gpu_all.log"
exit "${PIPESTATUS[0]}"
