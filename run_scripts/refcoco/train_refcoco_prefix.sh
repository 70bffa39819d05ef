#!/usr/bin/env bash
# π-Tuning step 1 with prefixes: learned key/value prefixes in encoder and decoder self-attention
# (P-Tuning v2). Defaults = π-Tuning's train_refcoco_prefix.sh: 100 tokens, no projection,
# dropout 0.2, lr 1e-4 (its sweep: 0.03, 5e-5, 1e-4), 100 epochs, global batch 1024 (16 per GPU),
# patch 480, seed 1 (the script sets none). See train_refcoco.sh for the shared variables.
set -euo pipefail
: "${BATCH_SIZE:=16}" "${SEED:=1}" "${PROMPT_LENGTH:=100}" "${PROMPT_DROPOUT:=0.2}" "${SAVE_DIR:=checkpoints/refcoco_prefix}"
source "$(dirname "$0")/pi_tuning_recipe.sh"
P=$PROMPT_LENGTH
export BATCH_SIZE SEED SAVE_DIR PETL_FLAGS="--encoder-prompt --decoder-prompt --encoder-prompt-length $P --decoder-prompt-length $P --prompt-dropout $PROMPT_DROPOUT"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
