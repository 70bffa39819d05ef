#!/usr/bin/env bash
# Parameter-efficient variant: LoRA on the body's attention projections; only LoRA, the embedder and
# the head train. Other methods the same way: EXTRA="--adapter --adapter-dim 32", "--bitfit",
# "--input-prompt-length 8". Variables as train_crossmodal.sh, plus LORA_R.
set -euo pipefail
DATASET=${DATASET:-gunpoint}
export SAVE_DIR=${SAVE_DIR:-checkpoints/crossmodal_${DATASET}_lora}
export EXTRA="--lora --lora-r ${LORA_R:-8} ${EXTRA:-}"
export LR=${LR:-1e-3}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_crossmodal.sh"
