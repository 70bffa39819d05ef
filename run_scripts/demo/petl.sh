#!/usr/bin/env bash
# Demo stage 2: parameter-efficient tuning of the foundation model (stage 1) on another variant.
# Full fine-tuning (train_refcoco.sh) and each PETL method (train_refcoco_{adapter,prefix,lora,bitfit}.sh)
# train on PETL_TARGET from the same checkpoint, once per seed of SEEDS; the report gives Acc@0.5
# (mean ± std over the seeds), trainable share, file size and train-step time ($OUT/petl/petl.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
source run_scripts/demo/common.sh

make_demo_data
foundation=$WORK/ckpt/foundation/checkpoint_best.pt
[[ -f "$foundation" ]] || { echo "petl.sh: run grounding.sh first (no $foundation)" >&2; exit 1; }
target=${PETL_TARGET:-refcoco+}
mkdir -p "$OUT/petl"

# the demo's sizes and learning rates of each method (the scripts' variables)
declare -A VARS=(
  [full]="LR=5e-4"
  [adapter]="LR=3e-3 ADAPTER_DIM=32"
  [prefix]="LR=1e-2 PROMPT_LENGTH=16 PROMPT_DROPOUT=0"
  [lora]="LR=3e-3 LORA_R=8 LORA_ALPHA=16 LORA_TARGETS=q_proj,k_proj,v_proj,out_proj,fc1,fc2"
  [bitfit]="LR=1e-2 BITFIT_SCOPE=all"
)
declare -A SCRIPT=([full]=train_refcoco.sh [adapter]=train_refcoco_adapter.sh [prefix]=train_refcoco_prefix.sh
                   [lora]=train_refcoco_lora.sh [bitfit]=train_refcoco_bitfit.sh)
METHODS=(full adapter prefix lora bitfit)

evaluations=("$foundation" petl/foundation_zero_shot)
for seed in "${SEEDS[@]}"; do  # one process per seed runs every method (run_queue)
  queue=$(new_queue "petl_s$seed")
  for m in "${METHODS[@]}"; do
    train "${SCRIPT[$m]}" "$WORK/ckpt/petl_${m}_s$seed" "$PETL_UPDATES" QUEUE="$queue" DATA="$(data_dir "$target")" \
      FINETUNE_FROM="$foundation" SEED="$seed" TASK_NAME="$target" ${VARS[$m]} > /dev/null
    evaluations+=("$WORK/ckpt/petl_${m}_s$seed/checkpoint_best.pt" "petl/$m/s$seed")
  done
  job "petl_s$seed" run_queue "$queue"
done
wait_jobs
for m in "${METHODS[@]:1}"; do cp "$WORK/ckpt/petl_${m}_s${SEEDS[0]}/pieces.safetensors" "$OUT/petl/$m.safetensors"; done
job petl_evaluation evaluate_all "$target" "${evaluations[@]}"
wait_jobs
zero=$(json_field "$OUT/petl/foundation_zero_shot/summary.json" "acc@0.5")
printf 'demo: petl foundation (no tuning) on %s acc@0.5=%.3f\n' "$target" "$zero"
python run_scripts/demo/petl_report.py "$OUT/petl" "$WORK/ckpt" "$(data_dir "$target")" "${SEEDS[*]}" "${METHODS[@]}"
