#!/usr/bin/env bash
# Pretrain JAKET on the corpus store on a lent GPU, bf16, for MINUTES of training, and pack the run under OUT.
# Prepared by benchmarks/gpu/prepare.sh (which also says how it is run); tested on the CPU first with
#   DEVICE=cpu PRECISION=bf16 benchmarks/gpu/pretrain_on_gpu.sh CARRY MODEL_DIR OUT 0.3
#   CARRY      folder with src/ (a `git archive` of the repo), the wheels the image lacks (duckdb), corpus.duckdb
#   MODEL_DIR  the base encoder's folder (config, tokenizer, model.safetensors)
set -euo pipefail
CARRY=$1; MODEL=$2; OUT=$3; MINUTES=${4:-7}
DEVICE=${DEVICE:-cuda}; PRECISION=${PRECISION:-bf16}; PY=${PY:-python3}; WORK=${WORK:-/root/jk}
if ls "$CARRY"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$CARRY"/*.whl
  export PYTHONPATH="$CARRY/src:/tmp/site"
else
  export PYTHONPATH="$CARRY/src"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 JAKET_PROGRESS_EVERY=20
mkdir -p "$WORK/store" "$OUT"
cp "$CARRY/corpus.duckdb" "$WORK/store/corpus.duckdb"
KG=$WORK/store/corpus.duckdb
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
COMMON=(--kg "$KG" --lm "$MODEL" --device "$DEVICE" --text-batch "${TEXT_BATCH:-64}" --kg-batch "${KG_BATCH:-128}"
        --rel-batch 256 --negatives 64 --max-seq-len 128 --desc-max-len 64 --threads 8 --no-progress)

# 1. calibration (40 steps: per-step time; also builds the tokenization cache and the cached memory the main
#    run reuses). bf16 failing here falls back to fp32 (TF32) rather than losing the lease.
calibrate() { rm -rf "$WORK/calib"; $PY -m jaket.train "${COMMON[@]}" --precision "$1" --steps 1000 \
              --stop-after 40 --save-every 0 --out "$WORK/calib"; }
calibrate "$PRECISION" || { echo "calibration failed with $PRECISION: falling back to fp32"; PRECISION=fp32;
                            calibrate fp32; }
STEPS=$($PY - "$WORK/calib/metrics.jsonl" "$MINUTES" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
dt = [b["time"] - a["time"] for a, b in zip(rows, rows[1:]) if not b["refresh"]][-20:]
# the last 20 plain steps, lower quartile: on the H200 the first steps ran 2.9x slower than the steady state
# (232 vs 81 ms/step), and a median over them made the main run stop after a third of its time budget
step = statistics.quantiles(dt, n=4)[0]
print(max(50, int(0.85 * float(sys.argv[2]) * 60 / step)))
print(f"calibration: {step * 1000:.1f} ms/step", file=sys.stderr)
PYEOF
)
echo "main run: $STEPS steps, time limit $MINUTES min, precision $PRECISION"

# 2. the run: the LR schedule spans STEPS; --time-limit stops (and saves) early if the estimate was optimistic
$PY -m jaket.train "${COMMON[@]}" --precision "$PRECISION" --steps "$STEPS" --time-limit "$MINUTES" \
    --save-every 1000 --log-every 5 --out "$WORK/run" 2>&1 | tee "$WORK/train.log"
cp "$WORK/train.log" "$WORK/run/train.log"

# 3. pack for the size-capped return trip (bf16 deltas against the base encoder + fp32 KM/heads + meta.tar.gz)
$PY "$CARRY/src/benchmarks/gpu/transport.py" pack "$WORK/run" "$OUT"
ls -la "$OUT"
