# Shared settings of the CPU demo stages (sourced, not run). QUICK=1 shrinks everything for tests.
# Every training, task embedding and evaluation goes through the run scripts a user gets
# (run_scripts/refcoco/*.sh), with the small variables below instead of the official recipe.
QUICK=${QUICK:-0}
OUT=${OUT:-results/demo}                 # what a person looks at: summaries, predictions, plots
WORK=${WORK:-$OUT/work}                  # data and checkpoints
DATA_ROOT=$WORK/data
SCRIPTS=run_scripts/refcoco
VARIANTS=(refcoco refcoco+ refcocog largest region)
# One thread per process: on a 2-core machine where anything else runs, a 2-thread step waits for a
# descheduled thread at every parallel region (measured: 5.2 s vs 0.13 s per demo step).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
JOBS=${JOBS:-2}                          # independent runs at once (one thread each)

if [[ "$QUICK" == "1" ]]; then
  N_TRAIN=${N_TRAIN:-96}; N_EVAL=${N_EVAL:-32}; N_TEST=${N_TEST:-32}; FOUNDATION_UPDATES=${FOUNDATION_UPDATES:-12}
  PETL_UPDATES=${PETL_UPDATES:-6}; IMAGE_SIZE=${IMAGE_SIZE:-64}; SEEDS=(${SEEDS:-1})
else
  N_TRAIN=${N_TRAIN:-6000}; N_EVAL=${N_EVAL:-200}; N_TEST=${N_TEST:-1000}; FOUNDATION_UPDATES=${FOUNDATION_UPDATES:-2000}
  PETL_UPDATES=${PETL_UPDATES:-120}; IMAGE_SIZE=${IMAGE_SIZE:-64}; SEEDS=(${SEEDS:-1 2 3})
fi

BEAM=${BEAM:-2}                          # beam of validation and evaluation (OFA: 5; 4-bin boxes need little)

# The toy-size variables of every run script: ofa_nano on the CPU, the demo's sentencepiece
# vocabulary, 100 bins, batches of 32, no drop path, validation only at update intervals.
export EVAL_ARGS="{\"beam\":$BEAM,\"min_len\":4,\"max_len_a\":0,\"max_len_b\":4}"
export ARCH=ofa_nano SPM_MODEL=$DATA_ROOT/spm.model CODE_DICT_SIZE=0 NUM_BINS=100 \
  PATCH_IMAGE_SIZE=$IMAGE_SIZE MAX_IMAGE_SIZE=$IMAGE_SIZE GPU=0 NPROC=1 TOTAL_BATCH=32 BATCH_SIZE=32 \
  DROP_PATH=0 VALIDATE_INTERVAL=100000 LOG_FORMAT=simple LOG_INTERVAL=20 RESTORE=

data_dir() { echo "$DATA_ROOT/$1"; }

# A run resumes by reusing whatever $WORK holds, so a $WORK made with other settings is refused
# (its data and checkpoints would be mixed with the new ones); the settings are stamped beside them.
check_work_settings() {
  local stamp=$WORK/settings now
  now="variants=${VARIANTS[*]} rows=$N_TRAIN/$N_EVAL/$N_TEST image_size=$IMAGE_SIZE"
  now+=" foundation_updates=$FOUNDATION_UPDATES petl_updates=$PETL_UPDATES"
  if [[ -f "$stamp" ]]; then
    [[ "$(cat "$stamp")" == "$now" ]] && return 0
    echo "demo: $WORK was made with other settings ($(cat "$stamp")), not these ($now): delete it or set WORK" >&2
    exit 2
  fi
  if [[ -d "$WORK/data" || -d "$WORK/ckpt" ]]; then
    echo "demo: $WORK holds data or checkpoints without a settings stamp (an older demo's): delete it or set WORK" >&2
    exit 2
  fi
  mkdir -p "$WORK" && printf '%s\n' "$now" > "$stamp"
}

# Data for every variant (as jobs: one variant per core), and one sentencepiece vocabulary over all
# their training texts.
make_demo_data() {
  check_work_settings
  for v in "${VARIANTS[@]}"; do
    [[ -f "$(data_dir "$v")/test.objects.jsonl" ]] || job "data_$v" ofa-make-grounding-data --variant "$v" \
      --out "$(data_dir "$v")" --seed 1 --n-train "$N_TRAIN" --n-valid "$N_EVAL" --n-test "$N_TEST" --image-size "$IMAGE_SIZE"
  done
  wait_jobs
  if [[ ! -f "$DATA_ROOT/spm.model" ]]; then
    ofa-train-spm "$DATA_ROOT"/*/train.tsv --out "$DATA_ROOT" --vocab-size 160 >/dev/null
  fi
}

# train SCRIPT SAVE_DIR UPDATES [VAR=value ...]: one run script for UPDATES updates, validating and
# saving at the last one (SAVE_INTERVAL_UPDATES=N among the variables for more); skipped when
# SAVE_DIR has a best checkpoint.
train() {
  local script=$1 save=$2 updates=$3; shift 3
  [[ -f "$save/checkpoint_best.pt" && "${RETRAIN:-0}" != "1" ]] && return 0
  env SAVE_DIR="$save" MAX_UPDATE="$updates" SAVE_INTERVAL_UPDATES="$updates" TENSORBOARD= "$@" \
    bash "$SCRIPTS/$script"
}

# new_queue NAME -> the path of an empty queue file: train ... QUEUE=<it> adds a run to it instead of
# running it, and `job NAME run_queue <it>` then makes all of them in one process (ofa-launch
# --commands), paying the interpreter start (~5 s of imports) once instead of once per run.
new_queue() { mkdir -p "$WORK/queues" && : > "$WORK/queues/$1" && echo "$WORK/queues/$1"; }
run_queue() { [[ ! -s "$1" ]] || ofa-launch --commands "$1"; }

# evaluate CHECKPOINT VARIANT NAME [VAR=value ...] -> $OUT/NAME/summary.json (evaluate_refcoco.sh)
evaluate() {
  local ckpt=$1 variant=$2 name=$3; shift 3
  run_evaluation "$variant" "$ckpt" "$OUT/$name" "$@"
}

# evaluate_all VARIANT CHECKPOINT NAME [CHECKPOINT NAME ...]: the same for several checkpoints in one
# process (an interpreter start with torch and fairseq costs as much as evaluating 1000 rows)
evaluate_all() {
  local variant=$1 ckpts=() results=(); shift
  while (( $# >= 2 )); do ckpts+=("$1"); results+=("$OUT/$2"); shift 2; done
  run_evaluation "$variant" "${ckpts[*]}" "${results[*]}"
}

run_evaluation() {  # VARIANT "CHECKPOINT ..." "RESULTS ..." [VAR=value ...]
  local variant=$1 ckpts=$2 results=$3; shift 3
  env CHECKPOINT="$ckpts" DATA="$(data_dir "$variant")" SPLIT=test RESULTS="$results" BATCH_SIZE=64 \
    BEAM="$BEAM" NO_REPEAT_NGRAM=0 "$@" bash "$SCRIPTS/evaluate_refcoco.sh" >/dev/null
}

json_field() { python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# job NAME COMMAND...: run COMMAND in the background, logging to $LOGS/NAME.log. Alone, a stage runs
# up to JOBS at once; under demo.sh (DEMO_POOL=1) every stage takes a slot from one pool of tokens on
# file descriptor 9 and gives it back when its command ends, so a stage that has finished leaves its
# core to the other. wait_jobs waits for this stage's jobs and stops the demo on the first failure,
# with the end of its log.
LOGS=$WORK/logs
pids=(); names=()
job() {
  local name=$1; shift
  mkdir -p "$LOGS"
  if [[ "${DEMO_POOL:-0}" == "1" ]]; then
    local token
    read -r -n 1 token <&9  # blocks until a slot is free
    ( timed "$name" "$@"; rc=$?; printf x >&9; exit "$rc" ) & pids+=($!); names+=("$name")
  else
    timed "$name" "$@" & pids+=($!); names+=("$name")
    (( ${#pids[@]} < JOBS )) || wait_jobs
  fi
}
# timed NAME COMMAND...: COMMAND with its output in $LOGS/NAME.log, and a row "NAME start end
# cpu_seconds status" in $LOGS/jobs.tsv (what benchmarks/bench_demo.py reads); returns its status
timed() {
  local name=$1 start=$EPOCHREALTIME rc=0 cpu; shift
  ( "$@" ) >"$LOGS/$name.log" 2>&1 || rc=$?
  times >"$LOGS/$name.cpu"  # not in a pipe: a pipe's subshell has no children of its own
  cpu=$(awk 'END { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' \
    "$LOGS/$name.cpu") && rm "$LOGS/$name.cpu"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$start" "$EPOCHREALTIME" "$cpu" "$rc" >> "$LOGS/jobs.tsv"
  return "$rc"
}
wait_jobs() {
  local i failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "demo: job ${names[$i]} failed; last lines of $LOGS/${names[$i]}.log:" >&2
      tail -n 25 "$LOGS/${names[$i]}.log" >&2; failed=1
    fi
  done
  pids=(); names=()
  (( failed == 0 )) || exit 1
}
