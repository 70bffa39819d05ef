#!/usr/bin/env bash
# π-Tuning step 2: the task embedding of one task = the diagonal Fisher information of its expert's
# PETL pieces, from one pass over the task's training split (no parameter update). Run it once per
# expert, then compare the tasks with ofa-task-similarity (see the end of this file).
# Defaults = π-Tuning's refcoco_task_emb.sh: OFA-Large, 4 per GPU, patch 480, drop path 0.2,
# seed 7, train mode (dropout and drop path on), its estimator (squared gradients of each batch's
# summed loss). Every variable can be set from the environment:
#   EXPERT=checkpoints/refcoco_adapter/pieces.safetensors bash run_scripts/refcoco/refcoco_task_emb.sh
set -euo pipefail

: "${DATA:=dataset/refcoco_data/refcoco_train.tsv,dataset/refcoco_data/refcoco_val.tsv}"
: "${BACKBONE:=checkpoints/ofa_large.pt}"                  # the frozen model the expert was trained on
: "${EXPERT:=checkpoints/refcoco_adapter/pieces.safetensors}" # piece file of the expert (ofa-pieces export)
: "${TASK_NAME=}"                                          # default: the task stored in the piece file
: "${OUT:=results/task_emb/${TASK_NAME:-refcoco}.safetensors}"  # output (.safetensors + .json metadata)
: "${ARCH:=ofa_large}"
: "${BPE_DIR=utils/BPE}"
: "${SPM_MODEL=}"                                          # a sentencepiece model instead of OFA's BPE
: "${CODE_DICT_SIZE:=8192}"
: "${NUM_BINS:=1000}"
: "${PATCH_IMAGE_SIZE:=480}"
: "${MAX_IMAGE_SIZE:=512}"
: "${NPROC:=1}"                                             # processes; partial Fishers are summed
: "${GPU:=1}"
: "${BATCH_SIZE:=4}"                                        # π-Tuning: 4 per GPU
: "${SEED:=7}"
: "${ESTIMATOR:=pi_tuning}"                                 # pi_tuning | empirical | model
: "${MODE:=train}"                                          # train (π-Tuning) | eval (no dropout: seed-free)
: "${MAX_SAMPLES:=0}"                                       # 0 = the whole training split
: "${DROPOUT:=0.1}"
: "${DROP_PATH:=0.2}"                                       # matters in train mode only
: "${FILE_ORDER:=0}"                                        # 1 = the pass in file order (what π-Tuning's pass sees)
: "${FREEZE_RESNET:=1}"                                     # as the expert was trained (pi_tuning_recipe.sh)
: "${EXTRA=}"

args=(--nproc "$NPROC")
[[ "$GPU" == "1" ]] && args+=(--gpu)
args+=(--entry task_emb -- "$DATA")
if [[ -n "$SPM_MODEL" ]]; then args+=(--bpe sentencepiece --spm-model "$SPM_MODEL"); else args+=(--bpe-dir "$BPE_DIR"); fi
[[ -z "$TASK_NAME" ]] || args+=(--task-emb-name "$TASK_NAME")
[[ "$FILE_ORDER" != "1" ]] || args+=(--file-order)
[[ "$FREEZE_RESNET" != "1" ]] || args+=(--freeze-resnet)
mkdir -p "$(dirname "$OUT")"
ofa-launch "${args[@]}" \
  --user-dir ofa_ext --task refcoco --arch "$ARCH" \
  --selected-cols 0,4,2,3 --max-src-length 80 --max-tgt-length 20 --num-bins "$NUM_BINS" --code-dict-size "$CODE_DICT_SIZE" \
  --patch-image-size "$PATCH_IMAGE_SIZE" --max-image-size "$MAX_IMAGE_SIZE" \
  --criterion adjust_label_smoothed_cross_entropy --label-smoothing 0.1 \
  --batch-size "$BATCH_SIZE" --num-workers 0 --seed "$SEED" \
  --dropout "$DROPOUT" --encoder-drop-path-rate "$DROP_PATH" --decoder-drop-path-rate "$DROP_PATH" \
  --finetune-from-model "$BACKBONE" --petl-load "$EXPERT" \
  --task-emb-file-path "$OUT" --fisher-estimator "$ESTIMATOR" --fisher-mode "$MODE" \
  --fisher-max-samples "$MAX_SAMPLES" $EXTRA

# Afterwards, for example:
#   ofa-task-similarity results/task_emb/{refcoco,refcocoplus,refcocog}.safetensors \
#       --out results/task_similarity --target refcocog --top-k 2
# writes task_sim.csv/.md/.png and top_k_refcocog.json (SIMILARITY= of train_refcoco_*_interpolation.sh).
