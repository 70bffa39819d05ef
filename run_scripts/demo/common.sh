# Shared settings of the CPU demo stages (sourced, not run). QUICK=1 shrinks everything for tests.
QUICK=${QUICK:-0}
OUT=${OUT:-results/demo}                 # what a person looks at: summaries, predictions, plots
WORK=${WORK:-$OUT/work}                  # data and checkpoints
DATA_ROOT=$WORK/data
VARIANTS=(refcoco refcoco+ refcocog largest)
# One thread per process: on a 2-core machine where anything else runs, a 2-thread step waits for a
# descheduled thread at every parallel region (measured: 5.2 s vs 0.13 s per demo step).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [[ "$QUICK" == "1" ]]; then
  N_TRAIN=${N_TRAIN:-96}; N_EVAL=${N_EVAL:-32}; FOUNDATION_UPDATES=${FOUNDATION_UPDATES:-12}
  PETL_UPDATES=${PETL_UPDATES:-6}; IMAGE_SIZE=${IMAGE_SIZE:-64}
else
  N_TRAIN=${N_TRAIN:-6000}; N_EVAL=${N_EVAL:-200}; FOUNDATION_UPDATES=${FOUNDATION_UPDATES:-2000}
  PETL_UPDATES=${PETL_UPDATES:-200}; IMAGE_SIZE=${IMAGE_SIZE:-64}
fi

# The small model and the vocabulary every stage shares.
MODEL_ARGS=(--user-dir ofa_ext --task refcoco --arch ofa_nano --bpe sentencepiece --spm-model "$DATA_ROOT/spm.model"
            --code-dict-size 0 --num-bins 100 --patch-image-size "$IMAGE_SIZE" --max-image-size "$IMAGE_SIZE")
TRAIN_ARGS=(--criterion adjust_label_smoothed_cross_entropy --label-smoothing 0.1
            --optimizer adam --adam-betas '(0.9,0.999)' --clip-norm 1.0 --batch-size 32 --num-workers 0
            --lr-scheduler ofa_polynomial_decay --warmup-ratio 0.06 --dropout 0.1
            --eval-acc --best-checkpoint-metric score --maximize-best-checkpoint-metric --validate-interval 1000
            --no-epoch-checkpoints --log-format tqdm --log-interval 20 --seed 1 --cpu)

data_dir() { echo "$DATA_ROOT/$1"; }

# Data for every variant, and one sentencepiece vocabulary over all their training texts.
make_demo_data() {
  for v in "${VARIANTS[@]}"; do
    if [[ ! -f "$(data_dir "$v")/test.tsv" ]]; then
      ofa-make-grounding-data --variant "$v" --out "$(data_dir "$v")" --seed 1 \
        --n-train "$N_TRAIN" --n-valid "$N_EVAL" --n-test "$N_EVAL" --image-size "$IMAGE_SIZE" >/dev/null
    fi
  done
  if [[ ! -f "$DATA_ROOT/spm.model" ]]; then
    ofa-train-spm "$DATA_ROOT"/*/train.tsv --out "$DATA_ROOT" --vocab-size 160 >/dev/null
  fi
}

# evaluate CHECKPOINT VARIANT NAME [extra ofa-evaluate args] -> $OUT/NAME/summary.json
evaluate() {
  local ckpt=$1 variant=$2 name=$3; shift 3
  ofa-evaluate "$(data_dir "$variant")" --path "$ckpt" --gen-subset test --results-path "$OUT/$name" \
    --batch-size 32 --cpu "$@" >/dev/null
}

json_field() { python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
