#!/usr/bin/env bash
# ORCA on NB360 PSICOV (2-D dense; k-means pseudo-labels; MSE) (released config values, specs/orca.md §10). Variables as train_orca.sh.
set -euo pipefail
export DATA=${DATA:-data/nb360/psicov}
export BODY=${BODY:-hf:swin-base}
export SOURCE_CORPUS=${SOURCE_CORPUS:-npz:data/cifar10/train.npz}
export RESIZE=${RESIZE:-224}
export TARGET=${TARGET:-dense}
export LOSS=${LOSS:-mse}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-5e-6}
export WEIGHT_DECAY=${WEIGHT_DECAY:-1e-5}
export BATCH_SIZE=${BATCH_SIZE:-1}
export ACCUM=${ACCUM:-32}
export EPOCHS=${EPOCHS:-10}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
export DECAY_EPOCHS=${DECAY_EPOCHS:-100}
export MAXSAMPLES=${MAXSAMPLES:-64}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
