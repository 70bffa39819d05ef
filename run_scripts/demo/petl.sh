#!/usr/bin/env bash
# Demo stage 2: parameter-efficient tuning of the foundation model (stage 1) on another variant.
# Full fine-tuning and each PETL method train on PETL_TARGET from the same checkpoint; the report
# compares Acc@0.5, trainable share, file size and train-step time (results/demo/petl.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
source run_scripts/demo/common.sh

make_demo_data
foundation=$WORK/ckpt/foundation/checkpoint_best.pt
[[ -f "$foundation" ]] || { echo "petl.sh: run grounding.sh first (no $foundation)" >&2; exit 1; }
target=${PETL_TARGET:-refcoco+}
mkdir -p "$OUT/petl"

declare -A FLAGS=(
  [full]=""
  [adapter]="--adapter --adapter-dim 32"
  [prefix]="--encoder-prompt --decoder-prompt --encoder-prompt-length 16 --decoder-prompt-length 16"
  [lora]="--lora --lora-r 8 --lora-alpha 16 --lora-targets q_proj,k_proj,v_proj,out_proj,fc1,fc2"
  [bitfit]="--bitfit --bitfit-scope all"
)
declare -A LR=([full]=5e-4 [adapter]=3e-3 [prefix]=1e-2 [lora]=3e-3 [bitfit]=1e-2)
METHODS=(full adapter prefix lora bitfit)

evaluate "$foundation" "$target" petl/foundation_zero_shot
for m in "${METHODS[@]}"; do
  save=$WORK/ckpt/petl_$m
  if [[ ! -f "$save/checkpoint_best.pt" ]]; then
    petl_args=(${FLAGS[$m]})
    [[ "$m" == "full" ]] || petl_args+=(--freeze-resnet)
    fairseq-train "$(data_dir "$target")" "${MODEL_ARGS[@]}" "${TRAIN_ARGS[@]}" \
      --finetune-from-model "$foundation" "${petl_args[@]}" --lr "${LR[$m]}" \
      --max-update "$PETL_UPDATES" --total-num-update "$PETL_UPDATES" \
      --validate-interval-updates $((PETL_UPDATES / 2 + 1)) --save-interval-updates $((PETL_UPDATES / 2 + 1)) \
      --keep-interval-updates 1 --save-dir "$save" --tensorboard-logdir "$OUT/tensorboard/petl_$m"
  fi
  [[ "$m" == "full" ]] || ofa-pieces export "$save/checkpoint_best.pt" "$OUT/petl/$m.safetensors" --task-name "$target" >/dev/null
  evaluate "$save/checkpoint_best.pt" "$target" "petl/$m"
done
zero=$(json_field "$OUT/petl/foundation_zero_shot/summary.json" "acc@0.5")
printf 'demo: petl foundation (no tuning) on %s acc@0.5=%.3f\n' "$target" "$zero"
python run_scripts/demo/petl_report.py "$OUT/petl" "$WORK/ckpt" "$(data_dir "$target")" "${METHODS[@]}"
