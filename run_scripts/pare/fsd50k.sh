#!/usr/bin/env bash
# PaRe on FSD50K (2-D multi-label spectrograms) (specs/pare.md §5, §8; released values). Override any variable from the environment.
set -euo pipefail
export DATASET=${DATASET:-fsd50k}
export DATA=${DATA:-data/nb360/fsd50k}
export TARGET=${TARGET:-multilabel}
export LOSS=${LOSS:-bce}
export POS_WEIGHT=${POS_WEIGHT:-10}
export EMBED_ARGS=${EMBED_ARGS:---patch-size 4 --resize 224}
export EPOCHS=${EPOCHS:-100}
export SCHEDULE=${SCHEDULE:---pare-begin-num 2000 --pare-end-num 1500}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-3e-5}
export WEIGHT_DECAY=${WEIGHT_DECAY:-5e-5}
export BATCH_SIZE=${BATCH_SIZE:-32}
export UPDATE_FREQ=${UPDATE_FREQ:-1}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_pare.sh"
