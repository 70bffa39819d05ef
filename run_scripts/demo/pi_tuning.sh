#!/usr/bin/env bash
# Demo stage 3: π-Tuning on the generated variants, from the foundation model of stage 1.
#  1. experts: one adapter per source task (refcoco, refcoco+, largest) on its full training set, and
#     one for the low-data target (refcocog with PI_LOW_PERCENT % of its training rows);
#  2. task embeddings (Fisher of each expert on its own training set) -> task similarity
#     (CSV / Markdown / heatmap in $OUT/pi_tuning/) -> the top-k sources most similar to the target;
#  3. interpolation of the target expert + the top-k source experts, trained on the low-data set,
#     collapsed to one piece file; compared with (a) the target expert alone and (b) each source
#     expert used directly on the target. Everything lands in $OUT/pi_tuning/summary.json.
# Independent jobs run PI_JOBS at a time with PI_THREADS threads each (on a shared 2-core machine
# two 1-thread jobs are much faster than one 2-thread job).
set -euo pipefail
cd "$(dirname "$0")/../.."
source run_scripts/demo/common.sh

TARGET=${PI_TARGET:-refcocog}
SOURCES=(${PI_SOURCES:-refcoco refcoco+ largest})
TOP_K=${PI_TOP_K:-2}
LOW_PERCENT=${PI_LOW_PERCENT:-10}
UPDATES=${PI_UPDATES:-$PETL_UPDATES}
ADAPTER=(--adapter --adapter-dim "${PI_ADAPTER_DIM:-16}" --freeze-resnet)
LR=${PI_LR:-3e-3}
# validate/save at PI update intervals only (the low-data set has a few batches per epoch)
INTERVALS=(--validate-interval 100000 --save-interval 100000 --validate-interval-updates $((UPDATES / 2 + 1))
           --save-interval-updates $((UPDATES / 2 + 1)) --keep-interval-updates 1)
PI_JOBS=${PI_JOBS:-2}
EMB_SAMPLES=${PI_EMB_SAMPLES:-0}   # samples per task embedding (0: the whole training split, as π-Tuning)
export OMP_NUM_THREADS=${PI_THREADS:-1}

make_demo_data
foundation=$WORK/ckpt/foundation/checkpoint_best.pt
[[ -f "$foundation" ]] || { echo "pi_tuning.sh: run grounding.sh first (no $foundation)" >&2; exit 1; }
pi=$OUT/pi_tuning
logs=$WORK/logs/pi_tuning
mkdir -p "$pi/experts" "$pi/task_emb" "$logs"
declare -A T  # stage durations (s)

# --- jobs: run up to PI_JOBS commands at once, each logging to a file; stop on the first failure
pids=(); names=()
job() { local name=$1; shift; "$@" >"$logs/$name.log" 2>&1 & pids+=($!); names+=("$name"); (( ${#pids[@]} < PI_JOBS )) || wait_jobs; }
wait_jobs() {
  local i failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "pi_tuning.sh: job ${names[$i]} failed; last lines of $logs/${names[$i]}.log:" >&2
      tail -n 25 "$logs/${names[$i]}.log" >&2; failed=1
    fi
  done
  pids=(); names=()
  (( failed == 0 )) || exit 1
}

# --- the low-data target: the first PI_LOW_PERCENT % of its training rows (at least 32)
low=${TARGET}_low
low_dir=$(data_dir "$low")
mkdir -p "$low_dir"
rows=$(wc -l < "$(data_dir "$TARGET")/train.tsv")
n_low=$(( rows * LOW_PERCENT / 100 )); (( n_low >= 32 )) || n_low=32
head -n "$n_low" "$(data_dir "$TARGET")/train.tsv" > "$low_dir/train.tsv.tmp" && mv "$low_dir/train.tsv.tmp" "$low_dir/train.tsv"
for split in valid test; do ln -sf "$(cd "$(data_dir "$TARGET")" && pwd)/$split.tsv" "$low_dir/$split.tsv"; done

# --- 1. experts (adapter pieces on the frozen foundation); the target's expert on the low data
train_expert() {  # VARIANT DATA_NAME
  local save=$WORK/ckpt/pi_$2
  if [[ ! -f "$save/checkpoint_best.pt" ]]; then
    fairseq-train "$(data_dir "$2")" "${MODEL_ARGS[@]}" "${TRAIN_ARGS[@]}" --log-format simple \
      --finetune-from-model "$foundation" "${ADAPTER[@]}" --lr "$LR" \
      --max-update "$UPDATES" --total-num-update "$UPDATES" "${INTERVALS[@]}" --save-dir "$save"
  fi
  ofa-pieces export "$save/checkpoint_best.pt" "$pi/experts/$1.safetensors" --task-name "$1"
}
start=$SECONDS
for v in "${SOURCES[@]}"; do job "expert_$v" train_expert "$v" "$v"; done
job "expert_$TARGET" train_expert "$TARGET" "$low"
wait_jobs
T[experts]=$((SECONDS - start))

# --- 2. task embeddings and similarity
embed() {  # VARIANT DATA_NAME
  ofa-task-embedding "$(data_dir "$2")" "${MODEL_ARGS[@]}" --criterion adjust_label_smoothed_cross_entropy \
    --label-smoothing 0.1 --batch-size 32 --num-workers 0 --seed 1 --cpu \
    --finetune-from-model "$foundation" --petl-load "$pi/experts/$1.safetensors" \
    --task-emb-file-path "$pi/task_emb/$1.safetensors" --fisher-max-samples "$EMB_SAMPLES"
}
start=$SECONDS
for v in "${SOURCES[@]}"; do job "emb_$v" embed "$v" "$v"; done
job "emb_$TARGET" embed "$TARGET" "$low"
wait_jobs
embeddings=(); for v in "${SOURCES[@]}" "$TARGET"; do embeddings+=("$pi/task_emb/$v.safetensors"); done
ofa-task-similarity "${embeddings[@]}" --out "$pi" --target "$TARGET" --top-k "$TOP_K" > "$logs/similarity.log" 2>&1 \
  || { cat "$logs/similarity.log" >&2; exit 1; }
T[embeddings_similarity]=$((SECONDS - start))
topk=$pi/top_k_$TARGET.json
experts=$(python -c "import json,sys; print(','.join(json.load(open(sys.argv[1]))['experts']))" "$topk")
python - "$topk" "$TARGET" <<'EOF'
import json, sys
rec = json.load(open(sys.argv[1]))
sims = " ".join(f"{k}={v:.4f}" for k, v in rec["similarities"].items() if k != sys.argv[2])
print(f"demo: similarity {sys.argv[2]}: {sims}")
EOF

# --- 3. interpolation on the low-data target, then one piece file
start=$SECONDS
save=$WORK/ckpt/pi_interpolation_$TARGET
if [[ ! -f "$save/checkpoint_best.pt" ]]; then
  fairseq-train "$low_dir" "${MODEL_ARGS[@]}" "${TRAIN_ARGS[@]}" --log-format simple \
    --finetune-from-model "$foundation" "${ADAPTER[@]}" --lr "$LR" \
    --interpolation-experts "$experts" --interpolation-init similarity --interpolation-similarities "$topk" \
    --max-update "$UPDATES" --total-num-update "$UPDATES" "${INTERVALS[@]}" --save-dir "$save" \
    > "$logs/interpolation.log" 2>&1 \
    || { tail -n 25 "$logs/interpolation.log" >&2; exit 1; }
fi
ofa-pieces collapse "$save/checkpoint_best.pt" "$pi/${TARGET}_pi.safetensors" --task-name "$TARGET" > "$pi/collapse.json" 2>"$logs/collapse.log" \
  || { cat "$logs/collapse.log" >&2; exit 1; }
T[interpolation]=$((SECONDS - start))

# --- evaluation on the target's test split
start=$SECONDS
job eval_interpolation evaluate "$save/checkpoint_best.pt" "$TARGET" pi_tuning/eval/interpolation
job eval_collapsed evaluate "$foundation" "$TARGET" pi_tuning/eval/collapsed \
  --model-overrides "{\"petl_load\": \"$pi/${TARGET}_pi.safetensors\"}"
job eval_foundation evaluate "$foundation" "$TARGET" pi_tuning/eval/foundation
job eval_single evaluate "$WORK/ckpt/pi_$low/checkpoint_best.pt" "$TARGET" pi_tuning/eval/single
for v in "${SOURCES[@]}"; do job "eval_source_$v" evaluate "$WORK/ckpt/pi_$v/checkpoint_best.pt" "$TARGET" "pi_tuning/eval/source_$v"; done
wait_jobs
T[evaluation]=$((SECONDS - start))

durations=$(for k in "${!T[@]}"; do printf '"%s": %s,' "$k" "${T[$k]}"; done)
python - "$pi" "$TARGET" "$n_low" "$rows" "$UPDATES" "{${durations%,}}" "$logs/interpolation.log" "${SOURCES[@]}" <<'EOF'
import json, re, sys
from pathlib import Path

pi, target, n_low, rows, updates, durations, interp_log, *sources = sys.argv[1:]
pi = Path(pi)
acc = lambda name: json.loads((pi / "eval" / name / "summary.json").read_text())["acc@0.5"]
topk = json.loads((pi / f"top_k_{target}.json").read_text())
collapse = json.loads((pi / "collapse.json").read_text().strip().splitlines()[-1])
src = {v: acc(f"source_{v}") for v in sources}
best = max(src, key=src.get)
weights_log = re.findall(r"mix_w\d+[= ]+[0-9.]+", Path(interp_log).read_text())
summary = {
    "target": target,
    "low_data_rows": int(n_low), "full_train_rows": int(rows), "updates_per_run": int(updates),
    "similarities": {k: v for k, v in topk["similarities"].items() if k != target},
    "top_k": topk["top_k"],
    "interpolated_experts": collapse["experts"],
    "learned_weights": collapse["weights"],
    "acc@0.5": {
        "interpolation": acc("interpolation"),
        "collapsed": acc("collapsed"),
        "single_low_data_expert": acc("single"),
        "foundation_no_tuning": acc("foundation"),
        "sources_on_target": src,
        "best_source": {"task": best, "acc@0.5": src[best]},
    },
    "collapsed_equals_interpolation": acc("collapsed") == acc("interpolation"),
    "durations_s": json.loads(durations),
    "files": {"similarity_csv": str(pi / "task_sim.csv"), "heatmap": str(pi / "task_sim.png"),
              "collapsed_pieces": collapse["pieces"]},
}
(pi / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
a = summary["acc@0.5"]
print(f"demo: interpolation acc@0.5={a['interpolation']:.3f} single={a['single_low_data_expert']:.3f} "
      f"best-source={src[best]:.3f} ({best}) foundation={a['foundation_no_tuning']:.3f}; weights {collapse['weights']} over "
      f"{[Path(e).stem for e in collapse['experts']]}; collapsed acc@0.5={a['collapsed']:.3f}")
EOF
