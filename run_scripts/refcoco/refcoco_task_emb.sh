#!/usr/bin/env bash
# π-Tuning step 2: the task embedding of one task = the diagonal Fisher information of its expert's
# PETL pieces, from one pass over the task's training split (no parameter update). Run it once per
# expert, then compare the tasks with ofa-task-similarity (see the end of this file).
# Edit the variables, then:  bash run_scripts/refcoco/refcoco_task_emb.sh
set -euo pipefail

DATA=${DATA:-dataset/refcoco_data/refcoco_train.tsv,dataset/refcoco_data/refcoco_val.tsv}
BACKBONE=${BACKBONE:-checkpoints/ofa_large.pt}                 # the frozen model the expert was trained on
EXPERT=${EXPERT:-checkpoints/refcoco_adapter/pieces.safetensors} # piece file of the expert (ofa-pieces export)
TASK_NAME=${TASK_NAME:-}                                          # default: the task stored in the piece file
OUT=${OUT:-results/task_emb/${TASK_NAME:-refcoco}.safetensors}    # output (.safetensors + .json metadata)
ARCH=${ARCH:-ofa_large}
BPE_DIR=${BPE_DIR:-utils/BPE}
NPROC=${NPROC:-1}                                                 # processes; partial Fishers are summed
GPU=${GPU:-1}
BATCH_SIZE=${BATCH_SIZE:-4}                                       # π-Tuning: 4 per GPU
PATCH_IMAGE_SIZE=${PATCH_IMAGE_SIZE:-480}
ESTIMATOR=${ESTIMATOR:-pi_tuning}                                 # pi_tuning | empirical | model
MODE=${MODE:-eval}                                                # eval | train (π-Tuning's released setting)
MAX_SAMPLES=${MAX_SAMPLES:-0}                                     # 0 = the whole training split
DROP_PATH=${DROP_PATH:-0.2}                                       # matters in train mode only
EXTRA=${EXTRA:-}

gpu_flag=()
[[ "$GPU" == "1" ]] && gpu_flag=(--gpu)
name_args=()
[[ -n "$TASK_NAME" ]] && name_args=(--task-emb-name "$TASK_NAME")
mkdir -p "$(dirname "$OUT")"
ofa-launch --nproc "$NPROC" "${gpu_flag[@]}" --entry task_emb -- "$DATA" \
  --user-dir ofa_ext --task refcoco --arch "$ARCH" --bpe-dir "$BPE_DIR" \
  --selected-cols 0,4,2,3 --max-src-length 80 --max-tgt-length 20 --num-bins 1000 \
  --patch-image-size "$PATCH_IMAGE_SIZE" --max-image-size 512 \
  --criterion adjust_label_smoothed_cross_entropy --label-smoothing 0.1 \
  --batch-size "$BATCH_SIZE" --num-workers 0 --seed 7 \
  --dropout 0.1 --encoder-drop-path-rate "$DROP_PATH" --decoder-drop-path-rate "$DROP_PATH" \
  --finetune-from-model "$BACKBONE" --petl-load "$EXPERT" --freeze-resnet \
  --task-emb-file-path "$OUT" --fisher-estimator "$ESTIMATOR" --fisher-mode "$MODE" \
  --fisher-max-samples "$MAX_SAMPLES" "${name_args[@]}" $EXTRA

# Afterwards, for example:
#   ofa-task-similarity results/task_emb/{refcoco,refcocoplus,refcocog}.safetensors \
#       --out results/task_similarity --target refcocog --top-k 2
# writes task_sim.csv/.md/.png and top_k_refcocog.json (SIMILARITY= of train_refcoco_*_interpolation.sh).
