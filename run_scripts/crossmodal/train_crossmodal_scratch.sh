#!/usr/bin/env bash
# ORCA's from-scratch baseline: the same run with the body's weights drawn fresh (--body-random-init).
# Variables as train_crossmodal.sh.
set -euo pipefail
DATASET=${DATASET:-gunpoint}
export SAVE_DIR=${SAVE_DIR:-checkpoints/crossmodal_${DATASET}_scratch}
export EXTRA="--body-random-init ${EXTRA:-}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_crossmodal.sh"
