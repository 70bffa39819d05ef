#!/usr/bin/env bash
# Evaluate a grounding checkpoint (ours or an official OFA one) on one split: Acc@0.5, with
# per-sample predictions (predictions.jsonl) and a summary (summary.json) under RESULTS.
#   CHECKPOINT=checkpoints/refcoco_full/checkpoint_best.pt bash run_scripts/refcoco/evaluate_refcoco.sh
set -euo pipefail

DATA=${DATA:-dataset/refcoco_data/refcoco_val.tsv}     # a TSV file, or a directory with {SPLIT}.tsv
SPLIT=${SPLIT:-test}                                    # used when DATA is a directory
CHECKPOINT=${CHECKPOINT:-checkpoints/refcoco_full/checkpoint_best.pt}
BPE_DIR=${BPE_DIR:-}                                    # set to override the checkpoint's --bpe-dir
RESULTS=${RESULTS:-results/refcoco_eval}
BATCH_SIZE=${BATCH_SIZE:-16}
UNCONSTRAINED=${UNCONSTRAINED:-0}                       # 1 = OFA's released decoding (whole vocabulary)
NO_REPEAT_NGRAM=${NO_REPEAT_NGRAM:-3}                   # OFA's evaluate_refcoco.sh uses 3

overrides='{"selected_cols":"0,4,2,3"'
[[ -n "$BPE_DIR" ]] && overrides+=",\"bpe_dir\":\"$BPE_DIR\""
overrides+='}'
extra=()
[[ "$UNCONSTRAINED" == "1" ]] && extra+=(--unconstrained-decoding)

ofa-evaluate "$DATA" --path "$CHECKPOINT" --gen-subset "$SPLIT" --results-path "$RESULTS" \
  --batch-size "$BATCH_SIZE" --beam 5 --min-len 4 --max-len-a 0 --max-len-b 4 \
  --no-repeat-ngram-size "$NO_REPEAT_NGRAM" --model-overrides "$overrides" "${extra[@]}"
