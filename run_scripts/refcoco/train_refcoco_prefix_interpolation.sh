#!/usr/bin/env bash
# π-Tuning step 3 with prefix experts (encoder + decoder prefixes of PROMPT_LENGTH, default 100):
# interpolate EXPERTS (or the experts of SIMILARITY=top_k_<target>.json), then collapse.
# Every variable of train_refcoco.sh and train_refcoco_interpolation.sh applies.
set -euo pipefail
export LR=${LR:-1e-4} MAX_EPOCH=${MAX_EPOCH:-5} PATCH_IMAGE_SIZE=${PATCH_IMAGE_SIZE:-480}
export SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_prefix_interpolation}
n=${PROMPT_LENGTH:-100}
export PETL_FLAGS="--encoder-prompt --decoder-prompt --encoder-prompt-length $n --decoder-prompt-length $n --prompt-dropout ${PROMPT_DROPOUT:-0.2}"
exec bash "$(dirname "$0")/train_refcoco_interpolation.sh"
