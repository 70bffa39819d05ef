#!/usr/bin/env bash
# π-Tuning step 1 with LoRA on q/k/v/out of every attention module. Defaults = π-Tuning's
# train_refcoco_lora.sh: r 16, alpha 1, lr 1e-4, 100 epochs, global batch 1024 (16 per GPU),
# patch 480, seed 1 (the script sets none). See train_refcoco.sh for the shared variables.
set -euo pipefail
: "${BATCH_SIZE:=16}" "${SEED:=1}" "${LORA_R:=16}" "${LORA_ALPHA:=1}" "${LORA_TARGETS:=q_proj,k_proj,v_proj,out_proj}"
: "${SAVE_DIR:=checkpoints/refcoco_lora}"
source "$(dirname "$0")/pi_tuning_recipe.sh"
export BATCH_SIZE SEED SAVE_DIR PETL_FLAGS="--lora --lora-r $LORA_R --lora-alpha $LORA_ALPHA --lora-targets $LORA_TARGETS"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
