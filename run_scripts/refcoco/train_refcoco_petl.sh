#!/usr/bin/env bash
# Shared body of the PETL scripts: train with PETL_FLAGS on a frozen backbone (train_refcoco.sh),
# then export the trained pieces next to the checkpoints (SAVE_DIR/pieces.safetensors).
set -euo pipefail
: "${PETL_FLAGS:?set PETL_FLAGS, or run one of train_refcoco_{adapter,prefix,lora,bitfit}.sh}"
export EXTRA="$PETL_FLAGS ${EXTRA:-}"
# the export runs inside the training process (ofa-launch --then-pieces): no second interpreter start
THEN_PIECES="export $(printf '%q %q' "$SAVE_DIR/checkpoint_best.pt" "$SAVE_DIR/pieces.safetensors")${TASK_NAME:+ --task-name $(printf '%q' "$TASK_NAME")}" \
  bash "$(dirname "$0")/train_refcoco.sh"
