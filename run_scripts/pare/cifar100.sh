#!/usr/bin/env bash
# PaRe on CIFAR-100 (2-D, Swin-B in the paper: BODY=hf:DIR, CIFAR-10 source images: CORPUS=npz:PATH) (specs/pare.md §5, §8; released values). Override any variable from the environment.
set -euo pipefail
export DATASET=${DATASET:-cifar100}
export DATA=${DATA:-data/nb360/cifar100}
export EMBED_ARGS=${EMBED_ARGS:---patch-size 4 --resize 224}
export EPOCHS=${EPOCHS:-60}
export SCHEDULE=${SCHEDULE:---pare-begin-num 2000 --pare-end-num 1500}
export OPTIMIZER=${OPTIMIZER:-sgd}
export LR=${LR:-1e-4}
export WEIGHT_DECAY=${WEIGHT_DECAY:-1e-3}
export BATCH_SIZE=${BATCH_SIZE:-32}
export UPDATE_FREQ=${UPDATE_FREQ:-32}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_pare.sh"
