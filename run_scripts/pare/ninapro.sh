#!/usr/bin/env bash
# PaRe on NinaPro (2-D, 16 x 52 EMG maps) (specs/pare.md §5, §8; released values). Override any variable from the environment.
set -euo pipefail
export DATASET=${DATASET:-ninapro}
export DATA=${DATA:-data/nb360/ninapro}
export EMBED_ARGS=${EMBED_ARGS:---patch-size 4 --resize 224}
export EPOCHS=${EPOCHS:-60}
export SCHEDULE=${SCHEDULE:---pare-begin-num 2000 --pare-end-num 1500}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-1e-4}
export WEIGHT_DECAY=${WEIGHT_DECAY:-1e-5}
export BATCH_SIZE=${BATCH_SIZE:-16}
export UPDATE_FREQ=${UPDATE_FREQ:-2}
export CLIP=${CLIP:-1}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_pare.sh"
