#!/usr/bin/env bash
# Regenerate every committed report under reports/ at the current commit, one after another, on this
# machine (the reports' provenance records the commit and whether the tree was clean: commit first).
#
#   bash tools/regenerate_reports.sh [LOG_DIR]
#
# zoo and all-methods run as 8 cold shards each (--no-cache), merged, so reports/shards.md measures the
# sharded run it describes; the other profiles take upstream's results from the local cache where their
# inputs are unchanged.  Each command's wall time goes to LOG_DIR/times.txt (default /tmp/regen).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD
LOG=${1:-/tmp/regen}
mkdir -p "$LOG"
: > "$LOG/times.txt"
failures=0

timed() {  # timed LABEL COMMAND...: run, log its output and wall time
  local label=$1; shift
  local start end rc
  start=$(date +%s.%N)
  "$@" > "$LOG/$(echo "$label" | tr ' /' '__').log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "$label rc=$rc wall=$(echo "$end - $start" | bc)" | tee -a "$LOG/times.txt"
  [ "$rc" -le 1 ] || failures=$((failures + 1))  # 1: a case failed (the report says so); 2+: the run broke
}

sharded() {  # sharded PROFILE OUT: 8 cold shards one after another, then the merge
  local profile=$1 out=$2 k
  rm -rf "$LOG/shards-$profile"
  for k in 1 2 3 4 5 6 7 8; do
    timed "$profile shard $k/8" $PY -m parity --profile "$profile" --shard "$k/8" --no-cache --jobs 2 --out "$LOG/shards-$profile/$k"
  done
  timed "$profile merge" $PY -m parity merge "$LOG"/shards-"$profile"/* --out "$out"
  grep "^$profile " "$LOG/times.txt" > "$LOG/times-$profile.txt"
}

sharded zoo reports/zoo
sharded all-methods reports/all-methods
timed "shards report" $PY -m tools.shards_report zoo="$LOG/shards-zoo:$LOG/times-zoo.txt" \
  all-methods="$LOG/shards-all-methods:$LOG/times-all-methods.txt" --out reports/shards.md
timed "full float32" $PY -m parity --profile full --dtype float32 --device cpu --jobs 2 --out reports
timed "quick float32" $PY -m parity --profile quick --dtype float32 --jobs 2 --out reports/quick
timed "quick float64" $PY -m parity --profile quick --dtype float64 --jobs 2 --out reports/f64
timed "full float64" $PY -m parity --profile full --dtype float64 \
  --methods gradcam,gradcam++,xgradcam,eigencam,eigengradcam,layercam --jobs 2 --out reports/f64-full
timed "all-methods float64" $PY -m parity --profile all-methods --dtype float64 --jobs 2 --out reports/all-methods/f64
timed "upstream-suite" $PY -m parity --profile upstream-suite --dtype float32 --jobs 2 --out reports/upstream-suite
timed "upstream-suite-informative" $PY -m parity --profile upstream-suite-informative --dtype float32 --jobs 2 \
  --out reports/upstream-suite-informative
timed "hubs float32" $PY -m parity --profile hubs --jobs 2 --out reports/hubs
timed "hubs float64" $PY -m parity --profile hubs --dtype float64 --jobs 2 --out reports/hubs/f64
timed "vit report" $PY -m tools.vit_report --out reports/all-methods/vit
timed "paper" $PY -m parity.paper --out reports/paper
timed "index" $PY -m parity.report_index reports/
echo "runs that broke (exit status 2 or more): $failures" | tee -a "$LOG/times.txt"
exit $((failures > 0))
