#!/usr/bin/env bash
# ORCA on NB360 Satellite (1-D, RoBERTa, text source): BODY=hf:ROBERTA_DIR (released config values, specs/orca.md §10). Variables as train_orca.sh.
set -euo pipefail
export DATA=${DATA:-data/nb360/satellite}
export BODY=${BODY:-minilm}
export TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-512}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-3e-5}
export WEIGHT_DECAY=${WEIGHT_DECAY:-3e-6}
export BATCH_SIZE=${BATCH_SIZE:-16}
export ACCUM=${ACCUM:-4}
export EPOCHS=${EPOCHS:-60}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
export DECAY_EPOCHS=${DECAY_EPOCHS:-60}
export MAXSAMPLES=${MAXSAMPLES:-128}
export LOSS=${LOSS:-ce}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
