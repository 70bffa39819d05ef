#!/usr/bin/env bash
# Cross-modality prompt transfer (specs/prompt_transfer.md §3): a source prompt (a piece file of
# prompt_tuning.sh, or any 'prompt' tensor) reused on a target task: MODE=frozen | projection |
# attention. Prints the paper's number (best test accuracy over epochs) and the validation-selected
# test accuracy (report.json). Edit the variables (or set them in the environment), then:
#   SOURCE_PROMPT=prompts/polarity.safetensors bash run_scripts/prompt_transfer/prompt_transfer.sh
set -euo pipefail

DATASET=${DATASET:-digits}
DATA=${DATA:-data/arrays/$DATASET}
BODY=${BODY:-minilm}
SOURCE_PROMPT=${SOURCE_PROMPT:?set SOURCE_PROMPT to a prompt file}
MODE=${MODE:-projection}                           # frozen | projection | attention
TOTAL_LEN=${TOTAL_LEN:-}                           # attention: total prompt length (default: the source's)
ATTN_SRC_LEN=${ATTN_SRC_LEN:-}                     # attention: K tokens attended from the source
TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-64}
LR=${LR:-1e-2}
MAX_EPOCH=${MAX_EPOCH:-50}
BATCH_SIZE=${BATCH_SIZE:-16}
SEED=${SEED:-42}
NPROC=${NPROC:-1}
GPU=${GPU:-0}
SAVE_DIR=${SAVE_DIR:-checkpoints/prompt_transfer/${DATASET}_${MODE}_$(basename "$SOURCE_PROMPT" .safetensors)_s$SEED}
EXTRA=${EXTRA:-}
USER_DIR=${USER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/ofa_ext}

[[ -f "$DATA/train.npz" ]] || ofa-make-array-data "$DATASET" --out "$DATA"
gpu_flag=()
[[ "$GPU" == "1" ]] && gpu_flag=(--gpu)
attn=()
[[ -n "$TOTAL_LEN" ]] && attn+=(--pt-total-len "$TOTAL_LEN")
[[ -n "$ATTN_SRC_LEN" ]] && attn+=(--pt-attn-src-len "$ATTN_SRC_LEN")

mkdir -p "$SAVE_DIR"
ofa-launch --nproc "$NPROC" "${gpu_flag[@]}" -- "$DATA" \
  --user-dir "$USER_DIR" --task prompt_transfer --arch crossmodal_model --body "$BODY" \
  --pt-source-prompt "$SOURCE_PROMPT" --pt-mode "$MODE" "${attn[@]}" --target-seq-len "$TARGET_SEQ_LEN" \
  --criterion crossmodal_loss --loss ce --optimizer adam --adam-betas '(0.9,0.999)' --lr "$LR" \
  --max-epoch "$MAX_EPOCH" --batch-size "$BATCH_SIZE" --num-workers 0 --seed "$SEED" \
  --valid-subset valid,test --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric \
  --no-epoch-checkpoints --no-last-checkpoints --log-format simple --log-interval 10 \
  --save-dir "$SAVE_DIR" $EXTRA 2>&1 | tee "$SAVE_DIR/train.log"
ofa-epoch-report "$SAVE_DIR/train.log" | tee "$SAVE_DIR/report.json"
