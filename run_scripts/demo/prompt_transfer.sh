#!/usr/bin/env bash
# Demo stage: cross-modality prompt transfer on real offline assets (a mechanics test, not the paper).
# Source prompts are tuned with the pretrained MiniLM on six real text tasks (Pang & Lee polarity and
# tasks derived from it and from the Lee news corpus), then transferred to two other input types fed
# through an embedder into the same MiniLM: 8x8 digit images and GunPoint series. Measured transfers
# (projection) are the ground truth against which ofa-transferability's estimates are ranked
# (Kendall tau); the top-ranked source is then transferred frozen / by projection / by attention, over
# SEEDS, next to a target prompt trained from VPT's Xavier init. Every training run is one of the run
# scripts under run_scripts/prompt_transfer/. Tables: $OUT (results/prompt_transfer). QUICK=1: toy size.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
QUICK=${QUICK:-0}
OUT=${OUT:-results/prompt_transfer}
WORK=${WORK:-$OUT/work}
JOBS=${JOBS:-2}                                   # runs at a time (one thread each)
if [[ "$QUICK" == "1" ]]; then
  PROMPT_LEN=${PROMPT_LEN:-4}; SEQ=${SEQ:-16}; EPOCHS=${EPOCHS:-1}; SEEDS=${SEEDS:-"42"}; ROWS=${ROWS:-60}
  SOURCES=${SOURCES:-"polarity pol_length lee_digit"}; TARGETS=${TARGETS:-"digits"}
else
  PROMPT_LEN=${PROMPT_LEN:-8}; SEQ=${SEQ:-32}; EPOCHS=${EPOCHS:-5}; SEEDS=${SEEDS:-"42 44 100"}; ROWS=${ROWS:-200}
  SOURCES=${SOURCES:-"polarity pol_negation pol_length lee_digit lee_said lee_half"}; TARGETS=${TARGETS:-"digits gunpoint"}
fi
FINAL_TARGETS=${FINAL_TARGETS:-$TARGETS}          # targets of the per-seed frozen / projection / attention comparison
LR=${LR:-1e-2}
BATCH=${BATCH_SIZE:-32}
SCRIPTS=run_scripts/prompt_transfer
mkdir -p "$OUT" "$WORK/prompts" "$WORK/runs"

# run_all: one command per stdin line, at most $JOBS at a time; stops at the first failure.
run_all() {
  local pids=() line
  while IFS= read -r line; do
    bash -c "$line" > /dev/null 2>&1 &
    pids+=($!)
    if (( ${#pids[@]} >= JOBS )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
common="PROMPT_LEN=$PROMPT_LEN TARGET_SEQ_LEN=$SEQ MAX_EPOCH=$EPOCHS LR=$LR BATCH_SIZE=$BATCH"
# Each run is skipped when its report exists, so an interrupted stage resumes where it stopped.
tune() {  # tune NAME SEED: a prompt on task NAME -> $WORK/prompts/NAME_sSEED.safetensors
  echo "[ -f $WORK/runs/tune_$1_s$2/report.json ] || $common DATA=$WORK/data/$1 DATASET=$1 SEED=$2 SAVE_DIR=$WORK/runs/tune_$1_s$2 \
PROMPT_OUT=$WORK/prompts/$1_s$2.safetensors bash $SCRIPTS/prompt_tuning.sh"
}
transfer() {  # transfer TARGET SOURCE MODE SEED [TOTAL K]
  local attn=""
  [[ "$3" == "attention" ]] && attn="TOTAL_LEN=$PROMPT_LEN ATTN_SRC_LEN=$((PROMPT_LEN / 2))"
  echo "[ -f $WORK/runs/$1_$2_$3_s$4/report.json ] || $common $attn DATA=$WORK/data/$1 DATASET=$1 SOURCE_PROMPT=$WORK/prompts/$2_s42.safetensors MODE=$3 \
SEED=$4 SAVE_DIR=$WORK/runs/$1_$2_$3_s$4 bash $SCRIPTS/prompt_transfer.sh"
}
acc() { python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$WORK/runs/$1/report.json" "$2"; }

python run_scripts/demo/prompt_transfer_tasks.py "$WORK/data" --rows "$ROWS" > /dev/null
echo "prompt-transfer: tuning ${SOURCES// /, } (sources) and ${TARGETS// /, } (targets) with MiniLM"
{ for s in $SOURCES $TARGETS; do tune "$s" 42; done; } | run_all
echo "prompt-transfer: ground truth, projection transfer of every source to every target"
{ for t in $TARGETS; do for s in $SOURCES; do transfer "$t" "$s" projection 42; done; done; } | run_all

summary=()
for t in $TARGETS; do
  gt="$WORK/gt_$t.csv"
  { echo "source,accuracy"; for s in $SOURCES; do echo "${s}_s42,$(acc "${t}_${s}_projection_s42" best_epoch_test)"; done; } > "$gt"
  mkdir -p "$OUT/$t"
  ofa-transferability $(for s in $SOURCES; do echo "$WORK/prompts/${s}_s42.safetensors"; done) \
    --target-prompt "$WORK/prompts/${t}_s42.safetensors" --target-tokens-from "$WORK/runs/tune_${t}_s42/checkpoint_best.pt" \
    --estimators avg_cosine,stimulation,modality_gap,task_gap,combined --body minilm \
    --ground-truth "$gt" --out "$OUT/$t" > "$OUT/$t/correlations.txt" 2> "$WORK/transferability_$t.log"
done
python run_scripts/demo/prompt_transfer_report.py "$OUT" "$WORK" --sources $SOURCES --targets $FINAL_TARGETS --phase pick \
  > "$WORK/picked.txt"
echo "prompt-transfer: top-ranked source per target: $(tr '\n' ' ' < "$WORK/picked.txt")"
{ while read -r t s; do
    for seed in $SEEDS; do
      for mode in frozen projection attention; do transfer "$t" "$s" "$mode" "$seed"; done
      [[ "$seed" == "42" ]] || tune "$t" "$seed"
    done
  done < "$WORK/picked.txt"; } | run_all
python run_scripts/demo/prompt_transfer_report.py "$OUT" "$WORK" --sources $SOURCES --targets $TARGETS \
  --final-targets $FINAL_TARGETS --seeds $SEEDS --phase final
