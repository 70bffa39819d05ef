#!/usr/bin/env bash
# ORCA on NB360 DeepSEA (1-D multi-label, RoBERTa, text source): BODY=hf:ROBERTA_DIR (released config values, specs/orca.md §10). Variables as train_orca.sh.
set -euo pipefail
export DATA=${DATA:-data/nb360/deepsea}
export BODY=${BODY:-minilm}
export TARGET=${TARGET:-multilabel}
export LOSS=${LOSS:-bce}
export POS_WEIGHT=${POS_WEIGHT:-4}
export TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-512}
export OPTIMIZER=${OPTIMIZER:-adam}
export LR=${LR:-1e-5}
export WEIGHT_DECAY=${WEIGHT_DECAY:-0}
export BATCH_SIZE=${BATCH_SIZE:-16}
export ACCUM=${ACCUM:-1}
export CLIP=${CLIP:-1}
export EPOCHS=${EPOCHS:-13}
export WARMUP_EPOCHS=${WARMUP_EPOCHS:-10}
export DECAY_EPOCHS=${DECAY_EPOCHS:-25}
export MAXSAMPLES=${MAXSAMPLES:-64}
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_orca.sh"
