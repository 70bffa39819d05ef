#!/usr/bin/env bash
# π-Tuning step 1 with LoRA on q/k/v/out of every attention module (π-Tuning: r=16, alpha=1).
# See train_refcoco.sh for the shared variables.
set -euo pipefail
export LR=${LR:-1e-4} SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_lora}
export PETL_FLAGS="--lora --lora-r ${LORA_R:-16} --lora-alpha ${LORA_ALPHA:-1} --lora-targets ${LORA_TARGETS:-q_proj,k_proj,v_proj,out_proj}"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
