#!/usr/bin/env bash
# ORCA on NB360 Darcy Flow (2-D dense; k-means pseudo-labels; MSE here, ORCA: relative L2) (released config values, specs/orca.md §10). Variables as train_orca.sh.
set -euo pipefail
export DATA=${DATA:-data/nb360/darcy}
export BODY=${BODY:-hf:swin-base}
export SOURCE_CORPUS=${SOURCE_CORPUS:-npz:data/cifar10/train.npz}
export RESIZE=${RESIZE:-224}
export TARGET=${TARGET:-dense}
export LOSS=${LOSS:-mse}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-1e-3}
export WEIGHT_DECAY=${WEIGHT_DECAY:-5e-3}
export BATCH_SIZE=${BATCH_SIZE:-4}
export ACCUM=${ACCUM:-1}
export EPOCHS=${EPOCHS:-100}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
export DECAY_EPOCHS=${DECAY_EPOCHS:-100}
export MAXSAMPLES=${MAXSAMPLES:-128}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
