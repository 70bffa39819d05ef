#!/usr/bin/env bash
# π-Tuning step 3 with LoRA experts (train_refcoco_lora.sh): interpolate EXPERTS (or the
# experts of SIMILARITY=top_k_<target>.json) on the target data, then collapse to one piece file.
# Every variable of train_refcoco.sh and train_refcoco_interpolation.sh applies.
set -euo pipefail
export SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_lora_interpolation}
# PETL options: read from the first expert; LORA_R=N states them explicitly (checked against the experts)
[[ -z "${LORA_R:-}" ]] || export PETL_FLAGS="--lora --lora-r $LORA_R --lora-alpha ${LORA_ALPHA:-1} --lora-targets ${LORA_TARGETS:-q_proj,k_proj,v_proj,out_proj}"
exec bash "$(dirname "$0")/train_refcoco_interpolation.sh"
