#!/usr/bin/env bash
# π-Tuning step 2: the task embedding of one task = the diagonal Fisher information of its expert's
# PETL pieces, from one pass over the task's training split (no parameter update). Run it once per
# expert, then compare the tasks with ofa-task-similarity (see the end of this file).
# Defaults = π-Tuning's refcoco_task_emb.sh: OFA-Large, 4 per GPU, patch 480, drop path 0.2,
# seed 7, train mode (dropout and drop path on), its estimator (squared gradients of each batch's
# summed loss). Every variable can be set from the environment:
#   EXPERT=checkpoints/refcoco_adapter/pieces.safetensors bash run_scripts/refcoco/refcoco_task_emb.sh
# DATA, EXPERT, OUT and TASK_NAME may be space-separated lists of the same length: one process then
# embeds every expert in turn (ofa-task-embedding --task-emb-also), with one interpreter start.
set -euo pipefail

: "${DATA:=dataset/refcoco_data/refcoco_train.tsv,dataset/refcoco_data/refcoco_val.tsv}"
: "${BACKBONE:=checkpoints/ofa_large.pt}"                  # the frozen model the expert was trained on
: "${EXPERT:=checkpoints/refcoco_adapter/pieces.safetensors}" # piece file of the expert (ofa-pieces export)
: "${TASK_NAME=}"                                          # default: the task stored in the piece file
: "${OUT=}"                                                # output (.safetensors + .json metadata;
                                                           # default results/task_emb/TASK_NAME.safetensors)
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

read -r -a datas <<< "$DATA"; read -r -a experts <<< "$EXPERT"; read -r -a names <<< "$TASK_NAME"
if [[ -z "$OUT" ]]; then
  outs=(); for name in "${names[@]:-refcoco}"; do outs+=("results/task_emb/$name.safetensors"); done
else
  read -r -a outs <<< "$OUT"
fi
n=${#experts[@]}
if (( ${#datas[@]} != n || ${#outs[@]} != n || (${#names[@]} != 0 && ${#names[@]} != n) )); then
  echo "refcoco_task_emb.sh: DATA (${#datas[@]}), EXPERT ($n), OUT (${#outs[@]}) and TASK_NAME (${#names[@]}," \
    "or none) must list as many entries each" >&2
  exit 2
fi
args=(--nproc "$NPROC")
[[ "$GPU" == "1" ]] && args+=(--gpu)
args+=(--entry task_emb -- "${datas[0]}")
also=()
for (( i = 1; i < n; i++ )); do also+=(--task-emb-also "${datas[i]}" "${experts[i]}" "${outs[i]}" "${names[i]:-}"); done
if [[ -n "$SPM_MODEL" ]]; then args+=(--bpe sentencepiece --spm-model "$SPM_MODEL"); else args+=(--bpe-dir "$BPE_DIR"); fi
(( ${#names[@]} == 0 )) || args+=(--task-emb-name "${names[0]}")
[[ "$FILE_ORDER" != "1" ]] || args+=(--file-order)
[[ "$FREEZE_RESNET" != "1" ]] || args+=(--freeze-resnet)
for out in "${outs[@]}"; do mkdir -p "$(dirname "$out")"; done
ofa-launch "${args[@]}" \
  --user-dir ofa_ext --task refcoco --arch "$ARCH" \
  --selected-cols 0,4,2,3 --max-src-length 80 --max-tgt-length 20 --num-bins "$NUM_BINS" --code-dict-size "$CODE_DICT_SIZE" \
  --patch-image-size "$PATCH_IMAGE_SIZE" --max-image-size "$MAX_IMAGE_SIZE" \
  --criterion adjust_label_smoothed_cross_entropy --label-smoothing 0.1 \
  --batch-size "$BATCH_SIZE" --num-workers 0 --seed "$SEED" \
  --dropout "$DROPOUT" --encoder-drop-path-rate "$DROP_PATH" --decoder-drop-path-rate "$DROP_PATH" \
  --finetune-from-model "$BACKBONE" --petl-load "${experts[0]}" \
  --task-emb-file-path "${outs[0]}" --fisher-estimator "$ESTIMATOR" --fisher-mode "$MODE" \
  --fisher-max-samples "$MAX_SAMPLES" "${also[@]}" $EXTRA

# Afterwards, for example:
#   ofa-task-similarity results/task_emb/{refcoco,refcocoplus,refcocog}.safetensors \
#       --out results/task_similarity --target refcocog --top-k 2
# writes task_sim.csv/.md/.png and top_k_refcocog.json (SIMILARITY= of train_refcoco_*_interpolation.sh).
