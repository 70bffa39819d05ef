#!/usr/bin/env bash
# π-Tuning step 1 with BitFit: only LayerNorm and FFN biases train (π-Tuning's selection;
# BITFIT_SCOPE=all trains every bias). See train_refcoco.sh for the shared variables.
set -euo pipefail
export LR=${LR:-1e-3} SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_bitfit}
export PETL_FLAGS="--bitfit --bitfit-scope ${BITFIT_SCOPE:-pi_tuning}"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
