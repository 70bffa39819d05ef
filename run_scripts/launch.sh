#!/usr/bin/env bash
# Multi-process fairseq-train: NPROC processes on CPU (gloo) or, with GPU=1, one per GPU (nccl).
#   NPROC=2 bash run_scripts/launch.sh --user-dir ofa_ext DATA --task refcoco --arch ofa_nano ...
set -euo pipefail
NPROC=${NPROC:-2}
GPU_FLAG=""
if [[ "${GPU:-0}" == "1" ]]; then GPU_FLAG="--gpu"; fi
exec ofa-launch --nproc "$NPROC" $GPU_FLAG -- "$@"
