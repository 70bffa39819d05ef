#!/usr/bin/env bash
# π-Tuning step 3 for any PETL method (shared body of train_refcoco_{adapter,lora,prefix}_interpolation.sh): on the frozen
# backbone, every piece becomes a learned mix Σ_k softmax(logits)_k θ_k of the experts' pieces; the
# logits (and the experts) train on the target task (train_refcoco.sh), then the mix is collapsed
# into one ordinary piece file, SAVE_DIR/pieces.safetensors (inference costs one expert).
#   EXPERTS     comma list of expert piece files (the target's own expert + the similar ones); default:
#               the "experts" of $SIMILARITY
#   PETL_FLAGS  the experts' PETL options (default: read from the first expert's piece file)
#   SIMILARITY  top_k_<target>.json from `ofa-task-similarity --target T --top-k K` (optional)
#   INIT        uniform | similarity (default: similarity when SIMILARITY is set)
#   GRANULARITY model | layer | slot | tensor (default slot: π-Tuning's one weight vector per adapter
#               slot / attention module)
set -euo pipefail
export SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_interpolation}
SIMILARITY=${SIMILARITY:-}
EXPERTS=${EXPERTS:-}
if [[ -z "$EXPERTS" ]]; then
  [[ -n "$SIMILARITY" ]] || { echo "set EXPERTS=a.safetensors,b.safetensors or SIMILARITY=top_k_<target>.json" >&2; exit 1; }
  EXPERTS=$(python -c "import json,sys; print(','.join(json.load(open(sys.argv[1]))['experts']))" "$SIMILARITY")
fi
# The experts' PETL options (they are saved in the checkpoint); default: read from the first expert.
PETL_FLAGS=${PETL_FLAGS:-$(python -c "import sys
from ofa_ext.models.petl import read_piece_file
from ofa_ext.models.registered import petl_flags
print(petl_flags(read_piece_file(sys.argv[1], tensors=False)[1]['petl_config']))" "${EXPERTS%%,*}")}
INIT=${INIT:-$([[ -n "$SIMILARITY" ]] && echo similarity || echo uniform)}
GRANULARITY=${GRANULARITY:-slot}
interp="--interpolation-experts $EXPERTS --interpolation-init $INIT --interpolation-granularity $GRANULARITY"
[[ -z "$SIMILARITY" ]] || interp+=" --interpolation-similarities $SIMILARITY"
export EXTRA="$PETL_FLAGS --freeze-resnet $interp ${EXTRA:-}"
bash "$(dirname "$0")/train_refcoco.sh"
ofa-pieces collapse "$SAVE_DIR/checkpoint_best.pt" "$SAVE_DIR/pieces.safetensors" ${TASK_NAME:+--task-name "$TASK_NAME"}
