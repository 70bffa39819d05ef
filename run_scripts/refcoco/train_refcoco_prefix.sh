#!/usr/bin/env bash
# π-Tuning step 1 with prefixes: learned key/value prefixes in encoder and decoder self-attention
# (P-Tuning v2; π-Tuning uses 100 tokens, no projection, dropout 0.2). See train_refcoco.sh.
set -euo pipefail
export LR=${LR:-1e-4} SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_prefix}
P=${PROMPT_LENGTH:-100}
export PETL_FLAGS="--encoder-prompt --decoder-prompt --encoder-prompt-length $P --decoder-prompt-length $P --prompt-dropout ${PROMPT_DROPOUT:-0.2}"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
