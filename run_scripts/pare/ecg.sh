#!/usr/bin/env bash
# PaRe on ECG (1-D, RoBERTa in the paper; 1,000 steps -> 50 tokens) (specs/pare.md §5, §8; released values). Override any variable from the environment.
set -euo pipefail
export DATASET=${DATASET:-ecg}
export DATA=${DATA:-data/nb360/ecg}
export TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-64}
export EPOCHS=${EPOCHS:-15}
export SCHEDULE=${SCHEDULE:---pare-seq-num 32}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-3e-5}
export BATCH_SIZE=${BATCH_SIZE:-64}
export UPDATE_FREQ=${UPDATE_FREQ:-1}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_pare.sh"
