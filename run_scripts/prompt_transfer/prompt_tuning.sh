#!/usr/bin/env bash
# Prompt tuning (specs/prompt_transfer.md §2): an input-level prompt + a head on a frozen body; the
# result is a piece file, a source prompt for prompt_transfer.sh and ofa-transferability. Edit the
# variables (or set them in the environment), then:
#   bash run_scripts/prompt_transfer/prompt_tuning.sh
# DATA is a folder of {train,valid,test}.npz (text, series, images or rows); when it has no
# train.npz, ofa-make-array-data writes DATASET there first. Defaults: the paper's 100-token prompt
# with VPT's Xavier init; the epochs/lr of its YAML configs were not released (spec §4.6).
set -euo pipefail

DATASET=${DATASET:-polarity}                       # any ofa-make-array-data name
DATA=${DATA:-data/arrays/$DATASET}
BODY=${BODY:-minilm}                               # minilm | hf:DIR | ofa:CHECKPOINT.pt
PROMPT_LEN=${PROMPT_LEN:-100}                      # the paper's prompts: 100 tokens
PROMPT_INIT=${PROMPT_INIT:-xavier}                 # xavier (VPT) | normal
TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-64}               # text tokens / 1-D tokens at most
LR=${LR:-1e-2}
MAX_EPOCH=${MAX_EPOCH:-50}
BATCH_SIZE=${BATCH_SIZE:-16}
SEED=${SEED:-42}                                   # the paper's seeds: 42 44 100
NPROC=${NPROC:-1}
GPU=${GPU:-0}
SAVE_DIR=${SAVE_DIR:-checkpoints/prompt_tuning/${DATASET}_s$SEED}
PROMPT_OUT=${PROMPT_OUT:-prompts/$DATASET.safetensors}
EXTRA=${EXTRA:-}
USER_DIR=${USER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/ofa_ext}

[[ -f "$DATA/train.npz" ]] || ofa-make-array-data "$DATASET" --out "$DATA"
gpu_flag=()
[[ "$GPU" == "1" ]] && gpu_flag=(--gpu)

mkdir -p "$SAVE_DIR" "$(dirname "$PROMPT_OUT")"
ofa-launch --nproc "$NPROC" "${gpu_flag[@]}" --then-pieces "export $(printf '%q %q' "$SAVE_DIR/checkpoint_best.pt" "$PROMPT_OUT") --task-name $(printf '%q' "$DATASET")" -- "$DATA" \
  --user-dir "$USER_DIR" --task prompt_tuning --arch crossmodal_model --body "$BODY" \
  --input-prompt-length "$PROMPT_LEN" --input-prompt-init "$PROMPT_INIT" --target-seq-len "$TARGET_SEQ_LEN" \
  --criterion crossmodal_loss --loss ce --optimizer adam --adam-betas '(0.9,0.999)' --lr "$LR" \
  --max-epoch "$MAX_EPOCH" --batch-size "$BATCH_SIZE" --num-workers 0 --seed "$SEED" \
  --valid-subset valid,test --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric \
  --no-epoch-checkpoints --no-last-checkpoints --log-format simple --log-interval 10 \
  --save-dir "$SAVE_DIR" $EXTRA 2>&1 | tee "$SAVE_DIR/train.log"
ofa-epoch-report "$SAVE_DIR/train.log" | tee "$SAVE_DIR/report.json"
