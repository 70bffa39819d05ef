#!/usr/bin/env bash
# π-Tuning step 1 with adapters: a bottleneck adapter after attention and FFN in every layer of a
# frozen OFA, then the trained pieces exported as one small file (SAVE_DIR/pieces.safetensors).
# Every variable of train_refcoco.sh applies (DATA, RESTORE, ARCH, BPE_DIR, NPROC, GPU, ...).
set -euo pipefail
export LR=${LR:-1e-4} SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_adapter}
export PETL_FLAGS="--adapter --adapter-dim ${ADAPTER_DIM:-128}"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
