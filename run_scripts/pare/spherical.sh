#!/usr/bin/env bash
# PaRe on Spherical (2-D; the paper's source is Tiny-ImageNet) (specs/pare.md §5, §8; released values). Override any variable from the environment.
set -euo pipefail
export DATASET=${DATASET:-spherical}
export DATA=${DATA:-data/nb360/spherical}
export EMBED_ARGS=${EMBED_ARGS:---patch-size 4 --resize 224}
export EPOCHS=${EPOCHS:-60}
export SCHEDULE=${SCHEDULE:---pare-begin-num 2000 --pare-end-num 1500}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-1e-4}
export WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
export BATCH_SIZE=${BATCH_SIZE:-16}
export UPDATE_FREQ=${UPDATE_FREQ:-8}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_pare.sh"
