#!/usr/bin/env bash
# Demo stage 1: train the small OFA on generated RefCOCO-like data (CPU) with train_refcoco.sh and
# evaluate it (evaluate_refcoco.sh) against two trivial baselines. Its best checkpoint is the
# "foundation" model of the later stages.
set -euo pipefail
cd "$(dirname "$0")/../.."
source run_scripts/demo/common.sh

make_demo_data
save=$WORK/ckpt/foundation
train train_refcoco.sh "$save" "$FOUNDATION_UPDATES" DATA="$(data_dir refcoco)" LR=2e-3 SEED=1 \
  SAVE_INTERVAL_UPDATES=$((FOUNDATION_UPDATES / 4 + 1)) TENSORBOARD="$OUT/tensorboard/foundation"
evaluate "$save/checkpoint_best.pt" refcoco grounding
python -m ofa_ext.evaluation.baselines "$(data_dir refcoco)" --split test > "$OUT/grounding/baselines.json"
acc=$(json_field "$OUT/grounding/summary.json" "acc@0.5")
centre=$(json_field "$OUT/grounding/baselines.json" centre)
largest=$(json_field "$OUT/grounding/baselines.json" largest)
printf 'demo: grounding acc@0.5=%.3f centre=%.3f largest=%.3f (%s test rows)\n' "$acc" "$centre" "$largest" \
  "$(json_field "$OUT/grounding/summary.json" n)"
