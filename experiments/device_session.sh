#!/usr/bin/env bash
# One prepared GPU session for the paper's own protocol: the 240- and 1600-unit maxouts
# (presets paper240 and paper of experiments.mnist_maxout), then the benchmarks, with
# the JSON files copied to $OUT (the device tool brings back at most 8 files of 16 MiB:
# the parameter files stay behind).
#
# On the device machine, from the repository root, with MNIST's IDX files copied into
# the git-ignored .data/mnist and named in the call's carry:
#
#   MODE=time bash experiments/device_session.sh    # one epoch of each, to size the run
#   EPOCHS_240=300 SEEDS_1600=1 EPOCHS_1600=200 bash experiments/device_session.sh
#
# Settings (environment): MODE (time | full, default full), DATA (.data/mnist), OUT,
# WORK (checkpoints, /tmp/advjax-device), EPOCHS_240 and EPOCHS_1600 (a cap on the
# selection's epochs; unset keeps the preset's 1000 with patience 100), SEEDS_1600
# (default 1; paper240 keeps its 5), BENCH (1 runs python -m benchmarks, default 1),
# TINY (1: 8 units, 1 epoch, the quick benchmarks; to test this script on a CPU).
# Whatever a cap cuts is recorded in each JSON's config; say it in the report.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
MODE=${MODE:-full} DATA=${DATA:-.data/mnist} OUT=${OUT:?set OUT to the output folder}
WORK=${WORK:-/tmp/advjax-device} BENCH=${BENCH:-1} TINY=${TINY:-0}
SEEDS_1600=${SEEDS_1600:-1}
python=${PYTHON:-python3}
size=()
[ "$TINY" = 1 ] && size=(--units 8)
mkdir -p "$OUT" "$WORK"
"$python" -c 'import jax; print("devices:", jax.devices())' | tee "$OUT/session.log"

maxout() {  # preset, epochs cap (may be empty), extra flags...
  local preset=$1 cap=$2; shift 2
  local epochs=()
  [ -n "$cap" ] && epochs=(--epochs "$cap")
  [ "$MODE" = time ] && epochs=(--epochs 1)
  [ "$TINY" = 1 ] && epochs=(--epochs 1)
  local start=$SECONDS
  "$python" -m experiments.mnist_maxout --preset "$preset" "${size[@]}" "${epochs[@]}" \
      --data-dir "$DATA" --out "$WORK/$preset" "$@" 2>&1 | tail -n 40
  local status=${PIPESTATUS[0]}
  echo "$preset: exit $status, $((SECONDS - start)) s" | tee -a "$OUT/session.log"
  cp "$WORK/$preset"/mnist_maxout_*.json "$OUT/" 2>/dev/null
}

maxout paper240 "${EPOCHS_240:-}"
maxout paper "${EPOCHS_1600:-}" --seeds "$SEEDS_1600"
if [ "$BENCH" = 1 ] && [ "$MODE" = full ]; then
  quick=()
  [ "$TINY" = 1 ] && quick=(--quick)
  start=$SECONDS
  "$python" -m benchmarks "${quick[@]}" --data-dir "$DATA" --out "$WORK/bench" 2>&1 \
      | tail -n 30
  echo "benchmarks: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s" | tee -a "$OUT/session.log"
  cp "$WORK/bench/results.json" "$OUT/benchmarks.json" 2>/dev/null
  cp "$WORK/bench/RESULTS.md" "$OUT/BENCHMARKS.md" 2>/dev/null
fi
ls -l "$OUT"
