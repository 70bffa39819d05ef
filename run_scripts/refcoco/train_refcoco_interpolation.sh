#!/usr/bin/env bash
# π-Tuning step 3 for any PETL method (shared body of train_refcoco_{adapter,lora,prefix}_interpolation.sh): on the frozen
# backbone, every piece becomes a learned mix Σ_k softmax(logits)_k θ_k of the experts' pieces; the
# logits (and the experts) train on the target task (train_refcoco.sh), then the mix is collapsed
# into one ordinary piece file, SAVE_DIR/pieces.safetensors (inference costs one expert).
# Defaults = π-Tuning's train_refcoco_adapter_interpolation.sh: lr 1e-4, 5 epochs, global batch
# 1024 (8 per GPU), patch 480, seed 7 (RefCOCO+ as the target: SEED=3407).
#   EXPERTS     comma list of expert piece files (the target's own expert + the similar ones); default:
#               the "experts" of $SIMILARITY
#   PETL_FLAGS  the experts' PETL options (default: read from the first expert's piece file)
#   SIMILARITY  top_k_<target>.json from `ofa-task-similarity --target T --top-k K` (optional)
#   INIT        uniform | similarity (default: similarity when SIMILARITY is set)
#   GRANULARITY model | layer | slot | tensor (default slot: π-Tuning's one weight vector per adapter
#               slot / attention module)
set -euo pipefail
: "${BATCH_SIZE:=8}" "${SEED:=7}" "${MAX_EPOCH:=5}" "${SAVE_DIR:=checkpoints/refcoco_interpolation}"
source "$(dirname "$0")/pi_tuning_recipe.sh"
export BATCH_SIZE SEED MAX_EPOCH SAVE_DIR
: "${SIMILARITY=}" "${EXPERTS=}"
if [[ -z "$EXPERTS" ]]; then
  [[ -n "$SIMILARITY" ]] || { echo "set EXPERTS=a.safetensors,b.safetensors or SIMILARITY=top_k_<target>.json" >&2; exit 1; }
  EXPERTS=$(python -c "import json,sys; print(','.join(json.load(open(sys.argv[1]))['experts']))" "$SIMILARITY")
fi
# The experts' PETL options (they are saved in the checkpoint); default: read from the first expert.
if [[ -z "${PETL_FLAGS:-}" ]]; then
  PETL_FLAGS=$(python -c "import sys
from ofa_ext.models.petl import read_piece_file
from ofa_ext.models.interpolation_options import petl_flags
print(petl_flags(read_piece_file(sys.argv[1], tensors=False)[1]['petl_config']))" "${EXPERTS%%,*}")
fi
: "${INIT:=$([[ -n "$SIMILARITY" ]] && echo similarity || echo uniform)}" "${GRANULARITY:=slot}"
interp="--interpolation-experts $EXPERTS --interpolation-init $INIT --interpolation-granularity $GRANULARITY"
[[ -z "$SIMILARITY" ]] || interp+=" --interpolation-similarities $SIMILARITY"
export EXTRA="$PETL_FLAGS $interp ${EXTRA:-}"
# the collapse runs inside the training process (ofa-launch --then-pieces)
THEN_PIECES="collapse $(printf '%q %q' "$SAVE_DIR/checkpoint_best.pt" "$SAVE_DIR/pieces.safetensors")${TASK_NAME:+ --task-name $(printf '%q' "$TASK_NAME")}" \
  bash "$(dirname "$0")/train_refcoco.sh"
