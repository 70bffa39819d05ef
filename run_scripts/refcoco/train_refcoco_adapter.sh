#!/usr/bin/env bash
# π-Tuning step 1 with adapters: a bottleneck adapter after attention and FFN in every layer of a
# frozen OFA, then the trained pieces exported as one small file (SAVE_DIR/pieces.safetensors).
# Defaults = π-Tuning's train_refcoco_adapter.sh: OFA-Large, dim 128, lr 1e-4, 100 epochs, global
# batch 1024 (8 per GPU), patch 480, seed 7 (pi_tuning_recipe.sh). Every variable of
# train_refcoco.sh applies (DATA, RESTORE, ARCH, BPE_DIR, NPROC, GPU, SEED, FREEZE_RESNET, ...).
set -euo pipefail
: "${BATCH_SIZE:=8}" "${SEED:=7}" "${ADAPTER_DIM:=128}" "${SAVE_DIR:=checkpoints/refcoco_adapter}"
source "$(dirname "$0")/pi_tuning_recipe.sh"
export BATCH_SIZE SEED SAVE_DIR PETL_FLAGS="--adapter --adapter-dim $ADAPTER_DIM"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
