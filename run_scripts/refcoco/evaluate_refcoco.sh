#!/usr/bin/env bash
# Evaluate a grounding checkpoint (ours or an official OFA one) on one split: Acc@0.5, with
# per-sample predictions (predictions.jsonl) and a summary (summary.json) under RESULTS.
# Defaults = OFA's evaluate_refcoco.sh (beam 5, 4 bins, no-repeat n-gram 3, batch 16).
#   CHECKPOINT=checkpoints/refcoco_full/checkpoint_best.pt bash run_scripts/refcoco/evaluate_refcoco.sh
# Several checkpoints in one process (the interpreter and imports start once): space-separated
# CHECKPOINT and RESULTS lists of the same length.
set -euo pipefail

: "${DATA:=dataset/refcoco_data/refcoco_val.tsv}"       # a TSV file, or a directory with {SPLIT}.tsv
: "${SPLIT:=test}"                                      # used when DATA is a directory
: "${CHECKPOINT:=checkpoints/refcoco_full/checkpoint_best.pt}"
: "${PETL_LOAD=}"                                      # a piece file to put on CHECKPOINT's backbone
: "${BPE_DIR=}"                                        # set to override the checkpoint's --bpe-dir
: "${RESULTS:=results/refcoco_eval}"                   # one folder per checkpoint of CHECKPOINT
: "${BATCH_SIZE:=16}"
: "${BEAM:=5}"
: "${UNCONSTRAINED:=0}"                                 # 1 = OFA's released decoding (whole vocabulary)
: "${NO_REPEAT_NGRAM:=3}"                               # OFA's evaluate_refcoco.sh uses 3
: "${GPU:=1}"                                           # 0 = on the CPU even where a GPU is present

overrides='{"selected_cols":"0,4,2,3"'
[[ -z "$BPE_DIR" ]] || overrides+=",\"bpe_dir\":\"$BPE_DIR\""
[[ -z "$PETL_LOAD" ]] || overrides+=",\"petl_load\":\"$PETL_LOAD\""
overrides+='}'
extra=()
[[ "$UNCONSTRAINED" != "1" ]] || extra+=(--unconstrained-decoding)
[[ "$GPU" == "1" ]] || extra+=(--cpu)

read -r -a checkpoints <<< "$CHECKPOINT"
read -r -a results <<< "$RESULTS"
ofa-evaluate "$DATA" --path "${checkpoints[@]}" --gen-subset "$SPLIT" --results-path "${results[@]}" \
  --batch-size "$BATCH_SIZE" --beam "$BEAM" --min-len 4 --max-len-a 0 --max-len-b 4 \
  --no-repeat-ngram-size "$NO_REPEAT_NGRAM" --model-overrides "$overrides" "${extra[@]}"
