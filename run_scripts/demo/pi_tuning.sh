#!/usr/bin/env bash
# Demo stage 3: π-Tuning on the generated variants, from the foundation model of stage 1, once per
# seed of SEEDS (the numbers are reported as mean ± std over the seeds):
#  1. experts (train_refcoco_adapter.sh): one adapter per source task (refcoco, refcoco+, largest,
#     region: the two "different tasks", decided by the image alone and by the text alone) on
#     its full training set, and one for the low-data target (refcocog with PI_LOW_PERCENT % of its rows);
#  2. task embeddings (refcoco_task_emb.sh: Fisher of each expert on its own training set) -> task
#     similarity (CSV / Markdown / heatmap in $OUT/pi_tuning/s<seed>/) -> the top-k sources most
#     similar to the target;
#  3. interpolation (train_refcoco_adapter_interpolation.sh) of the target expert + the top-k source
#     experts, trained on the low-data set and collapsed to one piece file; compared with (a) the
#     target expert alone and (b) each source expert used directly on the target.
# Everything lands in $OUT/pi_tuning/summary.json. Independent runs go JOBS at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."
source run_scripts/demo/common.sh

TARGET=${PI_TARGET:-refcocog}
SOURCES=(${PI_SOURCES:-refcoco refcoco+ largest region})
TOP_K=${PI_TOP_K:-2}
LOW_PERCENT=${PI_LOW_PERCENT:-10}
UPDATES=${PI_UPDATES:-$PETL_UPDATES}
EMB_SAMPLES=${PI_EMB_SAMPLES:-1500}  # samples per task embedding (π-Tuning: 0, the whole training split)
EXPERT_VARS=(ADAPTER_DIM="${PI_ADAPTER_DIM:-16}" LR="${PI_LR:-3e-3}")

make_demo_data
foundation=$WORK/ckpt/foundation/checkpoint_best.pt
[[ -f "$foundation" ]] || { echo "pi_tuning.sh: run grounding.sh first (no $foundation)" >&2; exit 1; }
pi=$OUT/pi_tuning
mkdir -p "$pi"
declare -A T  # stage durations (s)

# --- the low-data target: the first PI_LOW_PERCENT % of its training rows (at least 32)
low=${TARGET}_low
low_dir=$(data_dir "$low")
mkdir -p "$low_dir"
rows=$(wc -l < "$(data_dir "$TARGET")/train.tsv")
n_low=$(( rows * LOW_PERCENT / 100 )); (( n_low >= 32 )) || n_low=32
head -n "$n_low" "$(data_dir "$TARGET")/train.tsv" > "$low_dir/train.tsv.tmp" && mv "$low_dir/train.tsv.tmp" "$low_dir/train.tsv"
for split in valid test; do ln -sf "$(cd "$(data_dir "$TARGET")" && pwd)/$split.tsv" "$low_dir/$split.tsv"; done
data_of() { [[ "$1" == "$TARGET" ]] && echo "$low_dir" || data_dir "$1"; }
ckpt_of() { echo "$WORK/ckpt/pi_s$2_$1"; }   # TASK SEED

# --- 1. experts (adapter pieces on the frozen foundation); the target's expert on the low data
start=$SECONDS
for seed in "${SEEDS[@]}"; do  # one process per seed trains every task's expert (run_queue)
  queue=$(new_queue "experts_s$seed")
  for v in "${SOURCES[@]}" "$TARGET"; do
    train train_refcoco_adapter.sh "$(ckpt_of "$v" "$seed")" "$UPDATES" QUEUE="$queue" DATA="$(data_of "$v")" \
      FINETUNE_FROM="$foundation" SEED="$seed" TASK_NAME="$v" "${EXPERT_VARS[@]}" > /dev/null
  done
  job "experts_s$seed" run_queue "$queue"
done
wait_jobs
for seed in "${SEEDS[@]}"; do
  mkdir -p "$pi/s$seed/experts"
  for v in "${SOURCES[@]}" "$TARGET"; do cp "$(ckpt_of "$v" "$seed")/pieces.safetensors" "$pi/s$seed/experts/$v.safetensors"; done
done
T[experts]=$((SECONDS - start))

# --- 2. task embeddings and similarity
embed() {  # SEED: every task's embedding in one process (refcoco_task_emb.sh takes lists)
  local v data=() experts=() outs=() names=()
  for v in "${SOURCES[@]}" "$TARGET"; do
    data+=("$(data_of "$v")"); experts+=("$pi/s$1/experts/$v.safetensors"); outs+=("$pi/s$1/task_emb/$v.safetensors")
    names+=("$v")
  done
  env DATA="${data[*]}" BACKBONE="$foundation" EXPERT="${experts[*]}" TASK_NAME="${names[*]}" OUT="${outs[*]}" \
    BATCH_SIZE=32 SEED="$1" MODE=eval MAX_SAMPLES="$EMB_SAMPLES" bash "$SCRIPTS/refcoco_task_emb.sh"
}
start=$SECONDS
for seed in "${SEEDS[@]}"; do job "emb_s$seed" embed "$seed"; done
wait_jobs
for seed in "${SEEDS[@]}"; do
  embeddings=(); for v in "${SOURCES[@]}" "$TARGET"; do embeddings+=("$pi/s$seed/task_emb/$v.safetensors"); done
  ofa-task-similarity "${embeddings[@]}" --out "$pi/s$seed" --target "$TARGET" --top-k "$TOP_K" > "$LOGS/similarity_s$seed.log" 2>&1 \
    || { cat "$LOGS/similarity_s$seed.log" >&2; exit 1; }
done
T[embeddings_similarity]=$((SECONDS - start))

# --- 3. interpolation on the low-data target (collapsed to one piece file by the script)
interpolate() {  # SEED
  train train_refcoco_adapter_interpolation.sh "$WORK/ckpt/pi_s$1_interpolation" "$UPDATES" DATA="$low_dir" \
    FINETUNE_FROM="$foundation" SIMILARITY="$pi/s$1/top_k_$TARGET.json" GRANULARITY=model SEED="$1" \
    TASK_NAME="$TARGET" LR="${PI_LR:-3e-3}"
}
start=$SECONDS
for seed in "${SEEDS[@]}"; do job "interpolation_s$seed" interpolate "$seed"; done
wait_jobs
T[interpolation]=$((SECONDS - start))

# --- evaluation on the target's test split
start=$SECONDS
evaluations=("$foundation" pi_tuning/eval/foundation)
for seed in "${SEEDS[@]}"; do
  e=pi_tuning/s$seed/eval
  job "eval_collapsed_s$seed" evaluate "$foundation" "$TARGET" "$e/collapsed" \
    PETL_LOAD="$WORK/ckpt/pi_s${seed}_interpolation/pieces.safetensors"
  evaluations+=("$WORK/ckpt/pi_s${seed}_interpolation/checkpoint_best.pt" "$e/interpolation"
                "$(ckpt_of "$TARGET" "$seed")/checkpoint_best.pt" "$e/single")
  for v in "${SOURCES[@]}"; do evaluations+=("$(ckpt_of "$v" "$seed")/checkpoint_best.pt" "$e/source_$v"); done
done
job eval_checkpoints evaluate_all "$TARGET" "${evaluations[@]}"
wait_jobs
T[evaluation]=$((SECONDS - start))

durations=$(for k in "${!T[@]}"; do printf '"%s": %s,' "$k" "${T[$k]}"; done)
python run_scripts/demo/pi_report.py "$pi" "$WORK/ckpt" "$TARGET" "$n_low" "$rows" "$UPDATES" "{${durations%,}}" \
  "${SEEDS[*]}" "${SOURCES[@]}"
python run_scripts/demo/fisher_anatomy.py "$pi" "$TARGET" "$(IFS=,; echo "${SOURCES[*]}")" > /dev/null  # -> $pi/fisher_anatomy.md
