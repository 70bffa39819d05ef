#!/usr/bin/env bash
# π-Tuning step 3 with adapter experts (the released π-Tuning runs): interpolate EXPERTS (or the
# experts of SIMILARITY=top_k_<target>.json) on the target data, then collapse (defaults: see
# train_refcoco_interpolation.sh).
#   DATA=... RESTORE=checkpoints/ofa_large.pt SIMILARITY=results/task_similarity/top_k_refcocog.json \
#     bash run_scripts/refcoco/train_refcoco_adapter_interpolation.sh
# Every variable of train_refcoco.sh and train_refcoco_interpolation.sh applies.
set -euo pipefail
export SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_adapter_interpolation}
# PETL options: read from the first expert; ADAPTER_DIM=N states them explicitly (checked against the experts)
[[ -z "${ADAPTER_DIM:-}" ]] || export PETL_FLAGS="--adapter --adapter-dim $ADAPTER_DIM"
exec bash "$(dirname "$0")/train_refcoco_interpolation.sh"
