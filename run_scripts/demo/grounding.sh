#!/usr/bin/env bash
# Demo stage 1: train the small OFA on generated RefCOCO-like data (CPU) and evaluate it against
# two trivial baselines. Its best checkpoint is the "foundation" model of the later stages.
set -euo pipefail
cd "$(dirname "$0")/../.."
source run_scripts/demo/common.sh

make_demo_data
save=$WORK/ckpt/foundation
if [[ ! -f "$save/checkpoint_best.pt" ]] || [[ "${RETRAIN:-0}" == "1" ]]; then
  fairseq-train "$(data_dir refcoco)" "${MODEL_ARGS[@]}" "${TRAIN_ARGS[@]}" \
    --lr 2e-3 --max-update "$FOUNDATION_UPDATES" --total-num-update "$FOUNDATION_UPDATES" --validate-interval-updates $((FOUNDATION_UPDATES / 4 + 1)) \
    --save-interval-updates $((FOUNDATION_UPDATES / 4 + 1)) --keep-interval-updates 1 \
    --save-dir "$save" --tensorboard-logdir "$OUT/tensorboard/foundation"
fi
evaluate "$save/checkpoint_best.pt" refcoco grounding
python -m ofa_ext.evaluation.baselines "$(data_dir refcoco)" --split test > "$OUT/grounding/baselines.json"
acc=$(json_field "$OUT/grounding/summary.json" "acc@0.5")
centre=$(json_field "$OUT/grounding/baselines.json" centre)
largest=$(json_field "$OUT/grounding/baselines.json" largest)
printf 'demo: grounding acc@0.5=%.3f centre=%.3f largest=%.3f\n' "$acc" "$centre" "$largest"
