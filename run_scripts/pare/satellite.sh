#!/usr/bin/env bash
# PaRe on Satellite (1-D, 46 steps -> 46 tokens; the released 60-epoch schedule reaches k = 0, clamped to 1) (specs/pare.md §5, §8; released values). Override any variable from the environment.
set -euo pipefail
export DATASET=${DATASET:-satellite}
export DATA=${DATA:-data/nb360/satellite}
export TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-512}
export EPOCHS=${EPOCHS:-60}
export SCHEDULE=${SCHEDULE:---pare-seq-num 32 --pare-clamp-k}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-3e-5}
export WEIGHT_DECAY=${WEIGHT_DECAY:-3e-6}
export BATCH_SIZE=${BATCH_SIZE:-64}
export UPDATE_FREQ=${UPDATE_FREQ:-1}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_pare.sh"
