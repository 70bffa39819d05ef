#!/usr/bin/env bash
# Full fine-tuning of OFA on RefCOCO / RefCOCO+ / RefCOCOg with OFA's recipe (refcoco.md §7, §9:
# OFA-Large, lr 3e-5, 10 epochs, global batch 128, patch 512, seed 1), and the shared body of every
# grounding script here (train_refcoco_{adapter,lora,prefix,bitfit,*_interpolation}.sh set their
# own defaults, then call this one). Every variable below can be set from the environment:
#   DATA=... RESTORE=checkpoints/ofa_large.pt bash run_scripts/refcoco/train_refcoco.sh
# Works with the official files (refcoco_data.zip, ofa_large.pt, OFA's utils/BPE) and with
# generated data (ofa-make-grounding-data + ofa-train-spm: set SPM_MODEL, CODE_DICT_SIZE=0).
set -euo pipefail

# --- data, model, vocabulary
: "${DATA:=dataset/refcoco_data/refcoco_train.tsv,dataset/refcoco_data/refcoco_val.tsv}"  # or a folder of {split}.tsv
: "${RESTORE=checkpoints/ofa_large.pt}"     # pretrained checkpoint, --restore-file ("" = from scratch)
: "${FINETUNE_FROM=}"                       # or a backbone through --finetune-from-model (no optimizer state)
: "${ARCH:=ofa_large}"
: "${BPE_DIR=utils/BPE}"                    # OFA's dict.txt, encoder.json, vocab.bpe
: "${SPM_MODEL=}"                           # a sentencepiece model instead of OFA's BPE (ofa-train-spm)
: "${CODE_DICT_SIZE:=8192}"                  # image-code tokens of the vocabulary (0 for a new vocabulary)
: "${NUM_BINS:=1000}"
: "${PATCH_IMAGE_SIZE:=512}"
: "${MAX_IMAGE_SIZE:=512}"                   # boxes are divided by this before binning (OFA: 512)
: "${SAVE_DIR:=checkpoints/refcoco_full}"
# --- optimisation (global batch = BATCH_SIZE x UPDATE_FREQ x NPROC = TOTAL_BATCH)
: "${NPROC:=1}"                              # processes (GPUs when GPU=1)
: "${GPU:=1}"
: "${LR:=3e-5}"
: "${MAX_EPOCH:=10}"
: "${MAX_UPDATE:=0}"                         # > 0: stop after this many updates, whatever MAX_EPOCH (the schedule spans them)
: "${TOTAL_BATCH:=128}"
: "${BATCH_SIZE:=4}"
: "${UPDATE_FREQ:=$(( TOTAL_BATCH / (BATCH_SIZE * NPROC) ))}"
: "${WARMUP_RATIO:=0.06}"
: "${DROPOUT:=0.1}"
: "${DROP_PATH:=0.2}"
: "${SEED:=1}"                               # data order, dropout and initialisation of new pieces
: "${FILE_ORDER:=0}"                         # 1 = training batches in file order (OFA's order)
: "${FREEZE_RESNET:=0}"                      # 1 = eval-mode BatchNorm and a frozen ResNet trunk
# --- validation, saving, logging
: "${VALIDATE_INTERVAL:=1}"                  # epochs between validations/saves
: "${SAVE_INTERVAL_UPDATES:=500}"            # also validate and save every N updates (0 = never; OFA: 500)
beam5='{"beam":5,"min_len":4,"max_len_a":0,"max_len_b":4}'
: "${EVAL_ARGS:=$beam5}"                     # generation during validation (JSON)
: "${LOG_FORMAT:=simple}"
: "${LOG_INTERVAL:=10}"
: "${TENSORBOARD=$SAVE_DIR/tensorboard}"    # "" = no tensorboard logs
: "${EXTRA=}"                               # more flags, e.g. PETL options (see train_refcoco_*.sh)
: "${THEN_PIECES=}"                         # `ofa-pieces` arguments run after training, in the same process
: "${QUEUE=}"                               # a file: append this run to it instead of running it (then
                                            # `ofa-launch --commands QUEUE` runs every queued run in one process)

if (( BATCH_SIZE * UPDATE_FREQ * NPROC != TOTAL_BATCH )); then
  echo "train_refcoco.sh: BATCH_SIZE=$BATCH_SIZE x UPDATE_FREQ=$UPDATE_FREQ x NPROC=$NPROC is not TOTAL_BATCH=$TOTAL_BATCH" >&2
  exit 2
fi
# OFA's warm-up is a ratio of the whole run: count the updates from the training rows.
if [[ -d "$DATA" ]]; then train_files="$DATA/train.tsv"; else train_files=${DATA%,*}; fi
rows=$(cat ${train_files//,/ } | wc -l)
if (( MAX_UPDATE > 0 )); then
  TOTAL_UPDATES=$MAX_UPDATE
else
  TOTAL_UPDATES=$(( (rows + TOTAL_BATCH - 1) / TOTAL_BATCH * MAX_EPOCH ))
fi

args=()
if [[ -n "$SPM_MODEL" ]]; then args+=(--bpe sentencepiece --spm-model "$SPM_MODEL"); else args+=(--bpe-dir "$BPE_DIR"); fi
if [[ -n "$RESTORE" ]]; then args+=(--restore-file "$RESTORE" --reset-optimizer --reset-dataloader --reset-meters); fi
[[ -z "$FINETUNE_FROM" ]] || args+=(--finetune-from-model "$FINETUNE_FROM")
(( MAX_UPDATE <= 0 )) || { MAX_EPOCH=0; args+=(--max-update "$MAX_UPDATE"); }
[[ "$FILE_ORDER" != "1" ]] || args+=(--file-order)
[[ "$FREEZE_RESNET" != "1" ]] || args+=(--freeze-resnet)
[[ -z "$TENSORBOARD" ]] || args+=(--tensorboard-logdir "$TENSORBOARD")
launch=(--nproc "$NPROC")
[[ -z "$THEN_PIECES" ]] || launch+=(--then-pieces "$THEN_PIECES")
if [[ "$GPU" == "1" ]]; then launch+=(--gpu); args+=(--fp16 --fp16-scale-window 512); fi

mkdir -p "$SAVE_DIR"
run=("${launch[@]}" -- "$DATA" \
  --user-dir ofa_ext --task refcoco --arch "$ARCH" \
  --selected-cols 0,4,2,3 --max-src-length 80 --max-tgt-length 20 --num-bins "$NUM_BINS" --code-dict-size "$CODE_DICT_SIZE" \
  --patch-image-size "$PATCH_IMAGE_SIZE" --max-image-size "$MAX_IMAGE_SIZE" \
  --criterion adjust_label_smoothed_cross_entropy --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9,0.999)' --adam-eps 1e-08 --weight-decay 0.01 --clip-norm 1.0 \
  --lr-scheduler ofa_polynomial_decay --lr "$LR" --warmup-ratio "$WARMUP_RATIO" --max-epoch "$MAX_EPOCH" --total-num-update "$TOTAL_UPDATES" \
  --batch-size "$BATCH_SIZE" --update-freq "$UPDATE_FREQ" --seed "$SEED" \
  --dropout "$DROPOUT" --attention-dropout 0.0 --encoder-drop-path-rate "$DROP_PATH" --decoder-drop-path-rate "$DROP_PATH" \
  --eval-acc --eval-args "$EVAL_ARGS" \
  --best-checkpoint-metric score --maximize-best-checkpoint-metric \
  --validate-interval "$VALIDATE_INTERVAL" --save-interval "$VALIDATE_INTERVAL" \
  --save-interval-updates "$SAVE_INTERVAL_UPDATES" --validate-interval-updates "$SAVE_INTERVAL_UPDATES" --keep-interval-updates 1 --keep-best-checkpoints 1 \
  --no-epoch-checkpoints --fixed-validation-seed 7 --num-workers 0 \
  --log-format "$LOG_FORMAT" --log-interval "$LOG_INTERVAL" \
  --save-dir "$SAVE_DIR" "${args[@]}" $EXTRA)
if [[ -n "$QUEUE" ]]; then  # one line of `ofa-launch --commands QUEUE`, which runs them all in one process
  printf '%s\n' "$(printf '%q ' "${run[@]}")" >> "$QUEUE"  # one append: queued runs never interleave
  echo "train_refcoco.sh: queued the run of $SAVE_DIR in $QUEUE"
  exit 0
fi
ofa-launch "${run[@]}" 2>&1 | tee "$SAVE_DIR/train.log"
