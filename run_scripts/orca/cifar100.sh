#!/usr/bin/env bash
# ORCA on NB360 CIFAR-100 (2-D, Swin, CIFAR-10 source): BODY=hf:SWIN_DIR SOURCE_CORPUS=npz:CIFAR10.npz (released config values, specs/orca.md §10). Variables as train_orca.sh.
set -euo pipefail
export DATA=${DATA:-data/nb360/cifar100}
export BODY=${BODY:-hf:swin-base}
export SOURCE_CORPUS=${SOURCE_CORPUS:-npz:data/cifar10/train.npz}
export RESIZE=${RESIZE:-224}
export OPTIMIZER=${OPTIMIZER:-sgd}
export LR=${LR:-1e-4}
export WEIGHT_DECAY=${WEIGHT_DECAY:-1e-3}
export MOMENTUM=${MOMENTUM:-0.9}
export BATCH_SIZE=${BATCH_SIZE:-32}
export ACCUM=${ACCUM:-32}
export EPOCHS=${EPOCHS:-60}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
export DECAY_EPOCHS=${DECAY_EPOCHS:-200}
export MAXSAMPLES=${MAXSAMPLES:-128}
export LOSS=${LOSS:-ce}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
