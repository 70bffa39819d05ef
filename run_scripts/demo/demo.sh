#!/usr/bin/env bash
# The CPU demo behind `make demo`: a miniature π-Tuning pipeline on generated grounding data.
# Stage 1 (grounding) makes the foundation model; stages 2 (petl) and 3 (pi_tuning) both start
# from it and run side by side, sharing SLOTS runs at a time (default 2: one process per core of a
# 2-core machine; a stage that is done leaves its slot to the other). At the end, $OUT/README.md
# records the run (write_readme.py); work/logs/stages.json and work/logs/jobs.tsv hold the stage and
# job times that benchmarks/bench_demo.py reads.
# QUICK=1 runs every stage at toy size (a smoke test, not a result).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/demo}
export OUT
mkdir -p "$OUT/work/logs"
# the slot pool of common.sh's job(): SLOTS tokens in a pipe that every stage inherits as fd 9
pool="$OUT/work/.slots.$$"
rm -f "$pool" && mkfifo "$pool" && exec 9<>"$pool" && rm "$pool"
printf "%${SLOTS:-2}s" "" | tr ' ' x >&9
export DEMO_POOL=1
echo "== demo stage: grounding"
start=$SECONDS
bash run_scripts/demo/grounding.sh
grounding=$((SECONDS - start))
echo "== demo stages: petl and pi_tuning, side by side (logs: $OUT/work/logs/stage_*.log)"
start=$SECONDS
bash run_scripts/demo/petl.sh > "$OUT/work/logs/stage_petl.log" 2>&1 & petl=$!
bash run_scripts/demo/pi_tuning.sh > "$OUT/work/logs/stage_pi_tuning.log" 2>&1 & pi=$!
status=0
wait $petl || { echo "demo: stage petl failed:" >&2; tail -n 30 "$OUT/work/logs/stage_petl.log" >&2; status=1; }
wait $pi || { echo "demo: stage pi_tuning failed:" >&2; tail -n 30 "$OUT/work/logs/stage_pi_tuning.log" >&2; status=1; }
(( status == 0 )) || exit 1
grep -h '^demo: ' "$OUT/work/logs/stage_petl.log" "$OUT/work/logs/stage_pi_tuning.log"
rest=$((SECONDS - start))
stages="{\"grounding\": $grounding, \"petl + pi_tuning\": $rest}"
printf '%s\n' "$stages" > "$OUT/work/logs/stages.json.tmp" && mv "$OUT/work/logs/stages.json.tmp" "$OUT/work/logs/stages.json"
python run_scripts/demo/write_readme.py "$OUT" "$stages"
