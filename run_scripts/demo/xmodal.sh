#!/usr/bin/env bash
# Demo stage: cross-modal few-shot adaptation (Lin et al. 2023) as MINIATURES, on CPU.
#  (b) text-only mechanics: the real MiniLM-L6 on Pang-Lee polarity; samples = review sentences,
#      "class names" = label words through 3 templates. NOT vision-language.
#  (a) vision-language: a tiny CLIP trained here for a few hundred steps on generated single-object
#      images with captions, saved with save_pretrained and loaded back as a user's CLIP folder;
#      24 classes = colour x shape, held-out images; image-only vs cross-modal vs zero-shot.
#  (c) the same classes with the demo's OFA encoder as the multimodal body: `make demo`'s foundation
#      (FOUNDATION=...; else a small one trained here with train_refcoco.sh at toy size). OFA was
#      trained for grounding (image + text in, box out), never contrastively: image-only and
#      text-only inputs are outside what it saw, and its text rows need not align with its images.
#      Control: the same arch and vocabulary with random weights (do image-only features carry the classes?).
# Each: shots x seeds, uni_modal (random init, image rows only) vs cross_modal (zero-shot init + text
# rows), one fixed configuration (a reduced grid: lr 1e-3, wd 1e-4) so that it fits a few minutes.
# QUICK=1: smaller everything (a smoke test, not a result). PARTS="c" runs some parts only (it then
# prints their rows; the table $XOUT/README.md is written by a run of every part).
set -euo pipefail
cd "$(dirname "$0")/../.."
QUICK=${QUICK:-0}
PARTS=${PARTS:-"b a c"}
OUT=${OUT:-results/demo}
DEMO_WORK=${WORK:-$OUT/work}              # where `make demo` keeps its checkpoints
WORK=$DEMO_WORK/xmodal
FOUNDATION=${FOUNDATION:-$DEMO_WORK/ckpt/foundation/checkpoint_best.pt}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
if [[ "$QUICK" == "1" ]]; then
  XOUT=${XOUT:-$OUT/xmodal}
  SHOTS=1; SEEDS=1; UPDATES=40; PRETRAIN=60; JOBS=2; OFA_ROWS=96; OFA_UPDATES=12
else
  XOUT=${XOUT:-results/xmodal}            # the tables the README points to
  SHOTS=${SHOTS:-1,2,4}; SEEDS=${SEEDS:-1,2,3}; UPDATES=${UPDATES:-300}; PRETRAIN=${PRETRAIN:-400}; JOBS=${JOBS:-2}
  OFA_ROWS=${OFA_ROWS:-2000}; OFA_UPDATES=${OFA_UPDATES:-400}   # the stand-in foundation, if none is found
fi
part() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$WORK" "$XOUT"
extract() { python -m ofa_ext.cli.extract_features "$@" | tail -n 1 > /dev/null; }
grid() {  # grid NAME FEATURES BATCH_UNI BATCH_CROSS (a finished grid is kept: delete $WORK/NAME_*.json to rerun)
  if [[ -s "$WORK/$1_uni.json" && -s "$WORK/$1_cross.json" ]]; then echo "   (kept: $WORK/$1_*.json)"; return; fi
  python run_scripts/xmodal/grid.py --features "$2" --out "$XOUT/$1_image_only" --modality uni_modal --init random \
    --lrs 1e-3 --weight-decays 1e-4 --batches "$3" --shots "$SHOTS" --seeds "$SEEDS" --max-update "$UPDATES" \
    --jobs "$JOBS" | tail -n 1 > "$WORK/$1_uni.json"
  python run_scripts/xmodal/grid.py --features "$2" --out "$XOUT/$1_cross_modal" --modality cross_modal \
    --init zeroshot --lrs 1e-3 --weight-decays 1e-4 --batches "$4" --shots "$SHOTS" --seeds "$SEEDS" \
    --max-update "$UPDATES" --jobs "$JOBS" | tail -n 1 > "$WORK/$1_cross.json"
}

if part b; then
echo "-- (b) MINIATURE, text only: MiniLM on Pang-Lee polarity (text samples + label-name texts)"
[[ -f "$WORK/polarity/test.npz" ]] || python -m ofa_ext.cli.make_array_data polarity --out "$WORK/polarity" > /dev/null
printf 'neg\tnegative\npos\tpositive\n' > "$WORK/polarity/classes.txt"
extract --body minilm --data "$WORK/polarity" --classnames "$WORK/polarity/classes.txt" --out "$WORK/polarity_features" \
  --template "a {} movie review." --template "the sentiment is {}." --template "this film is {}."
grid polarity "$WORK/polarity_features" 2 4
fi

objects() {
  [[ -d "$WORK/objects/test" ]] || python -c "from ofa_ext.models.crossmodal.adaptation_miniature import \
write_object_folders as w; w('$WORK/objects')"
}
if part a; then
echo "-- (a) MINIATURE, vision-language: a tiny CLIP trained here on generated objects ($PRETRAIN steps)"
if [[ ! -f "$WORK/tiny_clip/model.safetensors" ]]; then
  python -c "from ofa_ext.models.crossmodal.adaptation_miniature import pretrain_tiny_clip as p; \
print(p('$WORK/tiny_clip', steps=$PRETRAIN))" | tail -n 1
fi
objects
extract --body "hf:$WORK/tiny_clip" --data "$WORK/objects" --classnames "$WORK/objects/classnames.txt" \
  --templates vanilla --out "$WORK/objects_features"
grid objects "$WORK/objects_features" 8 16
fi

if part c; then
echo "-- (c) MINIATURE, vision-language on OFA's encoder (a grounding model, not a contrastive one)"
if [[ -f "$FOUNDATION" ]]; then
  printf '{"checkpoint": "%s", "made_by": "make demo (its foundation)"}\n' "$FOUNDATION" > "$WORK/ofa_body.json"
else  # the demo's stage 1 at toy size, with the same run script and variables (common.sh)
  FOUNDATION=$WORK/ofa_foundation/ckpt/foundation/checkpoint_best.pt
  echo "   (no $DEMO_WORK/ckpt/foundation/checkpoint_best.pt: training a small stand-in, $OFA_UPDATES updates)"
  ( WORK=$WORK/ofa_foundation N_TRAIN=$OFA_ROWS N_EVAL=32 N_TEST=32 FOUNDATION_UPDATES=$OFA_UPDATES
    source run_scripts/demo/common.sh
    VARIANTS=(refcoco)
    make_demo_data
    train train_refcoco.sh "$WORK/ckpt/foundation" "$FOUNDATION_UPDATES" DATA="$(data_dir refcoco)" LR=2e-3 SEED=1 \
      > "$WORK/ckpt_foundation.log" 2>&1 || { tail -n 20 "$WORK/ckpt_foundation.log" >&2; exit 1; } )
  printf '{"checkpoint": "%s", "made_by": "trained here: train_refcoco.sh, ofa_nano, %s updates on %s generated rows"}\n' \
    "$FOUNDATION" "$OFA_UPDATES" "$OFA_ROWS" > "$WORK/ofa_body.json"
fi
objects
extract --body "ofa:$FOUNDATION" ${FOUNDATION_SPM:+--spm-model "$FOUNDATION_SPM"} --data "$WORK/objects" \
  --classnames "$WORK/objects/classnames.txt" --templates vanilla --out "$WORK/objects_ofa_features"
grid objects_ofa "$WORK/objects_ofa_features" 8 16
# control: the same arch, vocabulary and image size with random weights (do the features carry the classes?)
read -r arch spm size < <(python -c "import sys; from ofa_ext.models.ofa.checkpoint import read_checkpoint as r, \
stored_config_values as m; from ofa_ext.models.crossmodal.ofa_feature_encoder import task_options as t; \
s = r(sys.argv[1]); o = t(s); print(m(s)['_name'], sys.argv[2] or o['spm_model'], o['patch_image_size'])" \
  "$FOUNDATION" "${FOUNDATION_SPM:-}")
extract --body "ofa:$arch" --spm-model "$spm" --image-size "$size" --data "$WORK/objects" \
  --classnames "$WORK/objects/classnames.txt" --templates vanilla --out "$WORK/objects_ofa_random_features"
grid objects_ofa_random "$WORK/objects_ofa_random_features" 8 16
python run_scripts/xmodal/probe.py "$WORK/objects_ofa_features" "$WORK/objects_ofa_random_features" \
  > "$WORK/objects_ofa_probe.jsonl"
fi

python - "$WORK" "$XOUT" "$PARTS" "$UPDATES" <<'PY'
import json, sys
work, xout, parts, updates = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
lines = ["# Cross-modal few-shot adaptation: MINIATURES (not the paper's benchmark)", "",
         "Test accuracy (%), mean ± std over seeds; one configuration (lr 1e-3, wd 1e-4), not the full grid.", ""]
TITLES = {"b": ("polarity", "(b) text-only mechanics: MiniLM-L6, Pang-Lee polarity, label words as text samples"),
          "a": ("objects", "(a) vision-language: tiny CLIP trained here, 24 colour x shape classes"),
          "c": ("objects_ofa", "(c) vision-language on OFA's encoder: the demo's grounding model (never trained "
                "contrastively; image-only and text-only inputs), the same 24 classes"),
          "c0": ("objects_ofa_random", "(c, control) the same OFA arch and vocabulary with random weights")}
finals = {}
for part in [p for p in ("b", "a", "c", "c0") if p.rstrip("0") in parts]:
    name, title = TITLES[part]
    uni = json.load(open(f"{work}/{name}_uni.json"))["summary"]
    cross = json.load(open(f"{work}/{name}_cross.json"))["summary"]
    lines += [f"## {title}", "", "| shots | image/sample-only (random init) | cross-modal (zero-shot init + text) | "
              "cross-modal WiSE-FT | zero-shot (text) |", "|---|---|---|---|---|"]
    f = lambda v: "n/a" if v[0] is None else f"{v[0]:.1f} ± {v[1]:.1f}"
    for shots in uni:
        lines.append(f"| {shots} | {f(uni[shots]['test'])} | {f(cross[shots]['test'])} | "
                     f"{f(cross[shots]['test_wiseft'])} | {f(cross[shots]['test_zeroshot'])} |")
    lines.append("")
    s = min(uni, key=int)
    finals[part] = (s, uni[s]["test"][0], cross[s]["test"][0], cross[s]["test_zeroshot"][0])
lines.append("Made by `bash run_scripts/demo/xmodal.sh` (per-run logs: `*/runs.jsonl`, selections: `*/summary.json`).")
if "a" in parts:
    clip = json.load(open(f"{work}/tiny_clip/MINIATURE.json"))
    lines.append(f"Tiny CLIP: {clip['steps']} contrastive steps, batch {clip['batch_size']}, {clip['pool']} generated "
                 f"image-caption pairs, {clip['image_size']} px; loss {clip['loss_first']:.2f} -> {clip['loss_last']:.2f}.")
if "c" in parts:
    ofa = json.load(open(f"{work}/ofa_body.json"))
    lines.append(f"OFA body: `{ofa['checkpoint']}` ({ofa['made_by']}); features = the encoder's mean over positions "
                 "on the image alone / the template text alone, no projection.")
    trained, random_ = [json.loads(line) for line in open(f"{work}/objects_ofa_probe.jsonl")]
    lines.append(f"Full-data linear probe (`run_scripts/xmodal/probe.py`: every train image and view, test split): "
                 f"trained OFA {trained['test_accuracy']:.1f} %, random weights {random_['test_accuracy']:.1f} % "
                 f"(chance {trained['chance']:.1f} %).")
lines += [f"Validation: min(4, shots) images per class; every 100 updates; {updates} updates per run.", ""]
if set("bac") <= set(parts):
    open(f"{xout}/README.md", "w").write("\n".join(lines))
print("\n".join(lines))
for part, label in (("c", "xmodal-ofa"), ("c0", "xmodal-ofa-random"), ("a", "xmodal")):  # the CLIP line last
    if part in finals:
        s, u, c, z = finals[part]
        print(f"demo: {label} {s}shot image-only={u / 100:.3f} cross-modal={c / 100:.3f} zero-shot={z / 100:.3f} "
              "(MINIATURE)")
PY
