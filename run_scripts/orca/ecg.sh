#!/usr/bin/env bash
# ORCA on NB360 ECG (1-D, RoBERTa, text source): BODY=hf:ROBERTA_DIR (released config values, specs/orca.md §10). Variables as train_orca.sh.
set -euo pipefail
export DATA=${DATA:-data/nb360/ecg}
export BODY=${BODY:-minilm}
export TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-64}
export OPTIMIZER=${OPTIMIZER:-sgd}
export LR=${LR:-1e-6}
export WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
export MOMENTUM=${MOMENTUM:-0.99}
export BATCH_SIZE=${BATCH_SIZE:-4}
export ACCUM=${ACCUM:-16}
export EPOCHS=${EPOCHS:-15}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
export DECAY_EPOCHS=${DECAY_EPOCHS:-200}
export MAXSAMPLES=${MAXSAMPLES:-128}
export LOSS=${LOSS:-ce}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
