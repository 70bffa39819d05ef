#!/usr/bin/env bash
# ORCA on NB360 NinaPro DB5 (2-D, Swin, CIFAR-10 source) (released config values, specs/orca.md §10). Variables as train_orca.sh.
set -euo pipefail
export DATA=${DATA:-data/nb360/ninapro}
export BODY=${BODY:-hf:swin-base}
export SOURCE_CORPUS=${SOURCE_CORPUS:-npz:data/cifar10/train.npz}
export RESIZE=${RESIZE:-224}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-1e-4}
export WEIGHT_DECAY=${WEIGHT_DECAY:-1e-5}
export BATCH_SIZE=${BATCH_SIZE:-32}
export ACCUM=${ACCUM:-1}
export CLIP=${CLIP:-1}
export EPOCHS=${EPOCHS:-60}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
export DECAY_EPOCHS=${DECAY_EPOCHS:-60}
export EMBEDDER_EPOCHS=${EMBEDDER_EPOCHS:-100}
export MAXSAMPLES=${MAXSAMPLES:-128}
export LOSS=${LOSS:-ce}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
