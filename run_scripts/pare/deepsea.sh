#!/usr/bin/env bash
# PaRe on DeepSEA (1-D multi-label, 4 x 1,000 -> 500 tokens) (specs/pare.md §5, §8; released values). Override any variable from the environment.
set -euo pipefail
export DATASET=${DATASET:-deepsea}
export DATA=${DATA:-data/nb360/deepsea}
export TARGET=${TARGET:-multilabel}
export LOSS=${LOSS:-bce}
export POS_WEIGHT=${POS_WEIGHT:-4}
export TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-512}
export EPOCHS=${EPOCHS:-25}
export SCHEDULE=${SCHEDULE:---pare-seq-num 32}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-1e-5}
export BATCH_SIZE=${BATCH_SIZE:-16}
export UPDATE_FREQ=${UPDATE_FREQ:-1}
export CLIP=${CLIP:-1}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_pare.sh"
