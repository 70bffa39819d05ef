#!/usr/bin/env bash
# ORCA on UCR GunPoint with MiniLM and Lee-corpus source features: the offline miniature (toy values,
# not a released config). Variables as train_orca.sh.
set -euo pipefail
export DATASET=${DATASET:-gunpoint}
export DATA=${DATA:-data/arrays/gunpoint}
export BODY=${BODY:-minilm}
export SOURCE_CORPUS=${SOURCE_CORPUS:-lee}
export TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-10}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-1e-4}
export BATCH_SIZE=${BATCH_SIZE:-8}
export EPOCHS=${EPOCHS:-20}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-0}
export DECAY_EPOCHS=${DECAY_EPOCHS:-0}
export EMBEDDER_EPOCHS=${EMBEDDER_EPOCHS:-20}
export MAXSAMPLES=${MAXSAMPLES:-128}
export LOSS=${LOSS:-ce}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
