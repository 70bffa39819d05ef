#!/usr/bin/env bash
# Full fine-tuning of OFA on RefCOCO / RefCOCO+ / RefCOCOg with OFA's recipe (refcoco.md §7, §9).
# Edit the variables, then:  bash run_scripts/refcoco/train_refcoco.sh
# Works with the official files (refcoco_data.zip, ofa_large.pt, OFA's utils/BPE) and with
# generated data (ofa-make-grounding-data). NPROC>1 runs one process per GPU (or CPU processes).
set -euo pipefail

DATA=${DATA:-dataset/refcoco_data/refcoco_train.tsv,dataset/refcoco_data/refcoco_val.tsv}
RESTORE=${RESTORE:-checkpoints/ofa_large.pt}       # pretrained OFA checkpoint ("" = train from scratch)
ARCH=${ARCH:-ofa_large}
BPE_DIR=${BPE_DIR:-utils/BPE}                      # dict.txt, encoder.json, vocab.bpe
SAVE_DIR=${SAVE_DIR:-checkpoints/refcoco_full}
NPROC=${NPROC:-1}                                  # processes (GPUs when GPU=1)
GPU=${GPU:-1}
LR=${LR:-3e-5}
MAX_EPOCH=${MAX_EPOCH:-5}
BATCH_SIZE=${BATCH_SIZE:-4}
UPDATE_FREQ=${UPDATE_FREQ:-8}
PATCH_IMAGE_SIZE=${PATCH_IMAGE_SIZE:-512}
DROP_PATH=${DROP_PATH:-0.2}
EXTRA=${EXTRA:-}                                   # more flags, e.g. PETL options (see train_refcoco_*.sh)

# OFA's warm-up is a ratio of the whole run: count the updates from the training rows.
if [[ -d "$DATA" ]]; then train_files="$DATA/train.tsv"; else train_files=${DATA%,*}; fi
rows=$(cat ${train_files//,/ } | wc -l)
TOTAL_UPDATES=${TOTAL_UPDATES:-$(( (rows + BATCH_SIZE * UPDATE_FREQ * NPROC - 1) / (BATCH_SIZE * UPDATE_FREQ * NPROC) * MAX_EPOCH ))}

restore_args=()
if [[ -n "$RESTORE" ]]; then
  restore_args=(--restore-file "$RESTORE" --reset-optimizer --reset-dataloader --reset-meters)
fi
device_args=(--fp16 --fp16-scale-window 512)
[[ "$GPU" == "1" ]] || device_args=()
gpu_flag=()
[[ "$GPU" == "1" ]] && gpu_flag=(--gpu)

mkdir -p "$SAVE_DIR"
ofa-launch --nproc "$NPROC" "${gpu_flag[@]}" -- "$DATA" \
  --user-dir ofa_ext --task refcoco --arch "$ARCH" --bpe-dir "$BPE_DIR" \
  --selected-cols 0,4,2,3 --max-src-length 80 --max-tgt-length 20 --num-bins 1000 \
  --patch-image-size "$PATCH_IMAGE_SIZE" --max-image-size 512 \
  --criterion adjust_label_smoothed_cross_entropy --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9,0.999)' --adam-eps 1e-08 --weight-decay 0.01 --clip-norm 1.0 \
  --lr-scheduler ofa_polynomial_decay --lr "$LR" --warmup-ratio 0.06 --max-epoch "$MAX_EPOCH" --total-num-update "$TOTAL_UPDATES" \
  --batch-size "$BATCH_SIZE" --update-freq "$UPDATE_FREQ" \
  --dropout 0.1 --attention-dropout 0.0 --encoder-drop-path-rate "$DROP_PATH" --decoder-drop-path-rate "$DROP_PATH" \
  --eval-acc --eval-args '{"beam":5,"min_len":4,"max_len_a":0,"max_len_b":4}' \
  --best-checkpoint-metric score --maximize-best-checkpoint-metric \
  --validate-interval 1 --save-interval 1 --save-interval-updates 500 --keep-best-checkpoints 1 \
  --no-epoch-checkpoints --fixed-validation-seed 7 --num-workers 0 \
  --log-format simple --log-interval 10 --tensorboard-logdir "$SAVE_DIR/tensorboard" \
  --save-dir "$SAVE_DIR" "${restore_args[@]}" "${device_args[@]}" $EXTRA 2>&1 | tee "$SAVE_DIR/train.log"
