#!/usr/bin/env bash
# π-Tuning step 1 with BitFit: only LayerNorm and FFN biases train (π-Tuning's selection;
# BITFIT_SCOPE=all trains every bias). π-Tuning has no BitFit script: the defaults are OFA's
# train_refcoco_bitfit.sh (lr 1e-4 of its sweep 0.03 / 5e-5 / 1e-4, 100 epochs, global batch 1024,
# 16 per GPU, patch 480, seed 1). See train_refcoco.sh for the shared variables.
set -euo pipefail
: "${BATCH_SIZE:=16}" "${SEED:=1}" "${BITFIT_SCOPE:=pi_tuning}" "${SAVE_DIR:=checkpoints/refcoco_bitfit}"
source "$(dirname "$0")/pi_tuning_recipe.sh"
export BATCH_SIZE SEED SAVE_DIR PETL_FLAGS="--bitfit --bitfit-scope $BITFIT_SCOPE"
exec bash "$(dirname "$0")/train_refcoco_petl.sh"
