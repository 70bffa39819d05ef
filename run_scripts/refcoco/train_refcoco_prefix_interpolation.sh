#!/usr/bin/env bash
# π-Tuning step 3 with prefix experts (train_refcoco_prefix.sh, encoder + decoder prefixes):
# interpolate EXPERTS (or the experts of SIMILARITY=top_k_<target>.json), then collapse.
# Every variable of train_refcoco.sh and train_refcoco_interpolation.sh applies.
set -euo pipefail
export SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_prefix_interpolation}
# PETL options: read from the first expert; PROMPT_LENGTH=N states them explicitly (checked against the experts)
n=${PROMPT_LENGTH:-}
[[ -z "$n" ]] || export PETL_FLAGS="--encoder-prompt --decoder-prompt --encoder-prompt-length $n --decoder-prompt-length $n --prompt-dropout ${PROMPT_DROPOUT:-0.2}"
exec bash "$(dirname "$0")/train_refcoco_interpolation.sh"
