"""Evaluate a grounding checkpoint: per-sample predictions (JSON lines) and a summary (JSON).

    ofa-evaluate DATA --path checkpoints/checkpoint_best.pt --gen-subset test --results-path results/x
    ofa-evaluate DATA --path a.pt b.pt --results-path results/a results/b   # one process, two checkpoints

`DATA` is a directory of `{split}.tsv` files or a TSV file. Boxes are `[x0, y0, x1, y1]` in
original-image pixels; `acc@0.5` is the RefCOCO metric. The summary records the command line and the
checkpoint's sha256 so a number can be traced back to what produced it.
"""

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from ..utils.checkpoints import load_fairseq_checkpoint
from ..utils.files import atomic_write_text, require_writable_folder
from ..utils.options import parse_json_dict
from ..utils.errors import cli_entry

logger = logging.getLogger("ofa_ext.evaluate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofa-evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="directory with {split}.tsv files, or one TSV file")
    p.add_argument("--path", required=True, nargs="+",
                   help="checkpoint(s) to evaluate (ours or official OFA files), one after the other in this "
                        "process (the interpreter and data start once)")
    p.add_argument("--gen-subset", default="test", help="split to evaluate (file {split}.tsv in DATA)")
    p.add_argument("--results-path", required=True, nargs="+",
                   help="folder for predictions.jsonl and summary.json, one per --path")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--min-len", type=int, default=4)
    p.add_argument("--max-len-a", type=float, default=0)
    p.add_argument("--max-len-b", type=int, default=4)
    p.add_argument("--no-repeat-ngram-size", type=int, default=0)
    p.add_argument("--unconstrained-decoding", action="store_true",
                   help="decode over the whole vocabulary as OFA's released evaluation does")
    p.add_argument("--model-overrides", default="{}",
                   help="JSON object of task/model options to override (e.g. bpe_dir, selected_cols)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip (warn once each, count in summary.json) rows that cannot be read instead of stopping")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="evaluate on CPU even if a GPU is present")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--bf16", action="store_true")
    return p


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_for_evaluation(path: str, data: str, overrides: dict):
    """Model (eval mode) and refcoco task from a checkpoint, with `data` as the task's data."""
    data_path = Path(data)
    arg_overrides = dict(overrides, data=str(data_path.parent if data_path.is_file() else data_path))
    model, cfg, task = load_fairseq_checkpoint(path, arg_overrides, what="--path")
    if task.__class__.__name__ != "RefcocoTask":
        raise ValueError(f"--path {path}: trained for task {cfg.task._name!r}; expected 'refcoco'")
    return model.eval(), cfg, task


@cli_entry("ofa-evaluate")
def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    if len(args.path) != len(args.results_path):
        raise SystemExit(f"ofa-evaluate: {len(args.path)} --path checkpoint(s) but {len(args.results_path)} "
                         "--results-path folder(s); expected one folder per checkpoint")
    out_dirs = [require_writable_folder(d, "--results-path") for d in args.results_path]  # before any pass
    overrides = parse_json_dict(args.model_overrides, "--model-overrides")
    if args.skip_bad_rows:
        overrides["skip_bad_rows"] = True
    command = "ofa-evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
    for path, out_dir in zip(args.path, out_dirs):
        evaluate_checkpoint(path, out_dir, args, overrides, command)
    return 0


def evaluate_checkpoint(path: str, out_dir: Path, args: argparse.Namespace, overrides: dict, command: str) -> dict:
    """One checkpoint on the split: predictions.jsonl and summary.json in ``out_dir``; returns the summary."""
    model, cfg, task = load_for_evaluation(path, args.data, overrides)
    data_path = Path(args.data)
    subset = data_path.stem if data_path.is_file() else args.gen_subset
    use_cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    dtype = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else torch.float32
    model.to(device=device, dtype=dtype)

    task.load_dataset(subset)  # an empty split is an error there
    dataset = task.dataset(subset)
    gen_args = {"beam": args.beam, "min_len": args.min_len, "max_len_a": args.max_len_a,
                "max_len_b": args.max_len_b, "no_repeat_ngram_size": args.no_repeat_ngram_size}
    if args.unconstrained_decoding:
        task.cfg.unconstrained_decoding = True
    generator = task.build_grounding_generator([model], gen_args)
    itr = task.get_batch_iterator(dataset=dataset, max_sentences=args.batch_size, num_workers=args.num_workers,
                                  ignore_invalid_inputs=False, required_batch_size_multiple=1,
                                  ).next_epoch_itr(shuffle=False)

    from ..evaluation.grounding import predict_grounding
    from fairseq import utils

    rows, hits, ious = [], 0.0, 0.0
    for sample in tqdm(itr, desc=f"evaluate {subset}", unit="batch", mininterval=1.0):
        if not sample:
            continue  # every row of this batch was bad (--skip-bad-rows)
        sample = utils.move_to_cuda(sample) if use_cuda else sample
        if dtype != torch.float32:
            sample["net_input"]["patch_images"] = sample["net_input"]["patch_images"].to(dtype)
        with torch.no_grad():
            pred = predict_grounding(generator, [model], sample, task.dictionary, task.cfg.num_bins,
                                     task.cfg.max_image_size)
        texts = sample.get("text") or [None] * len(pred.hits)
        for i in range(len(pred.hits)):
            rows.append({
                "id": str(sample["id"][i]), "text": texts[i],
                "pred_box": [round(float(v), 3) for v in pred.boxes[i]],
                "gold_box": [round(float(v), 3) for v in sample["region_coords"][i]],
                "iou": round(float(pred.true_iou[i]), 6), "hit": bool(pred.hits[i] > 0),
                "score": round(float(pred.scores[i]), 6),
            })
        hits += float(pred.hits.sum())
        ious += float(pred.true_iou.sum())
    n = len(rows)
    total = len(dataset) + int(getattr(dataset.reader, "num_bad_rows", 0))
    skipped = total - n
    if n == 0:
        raise ValueError(f"{task.split_path(subset)}: none of its {total} row(s) could be evaluated "
                         "(all were bad and skipped); expected at least one usable row")
    if skipped:
        logger.warning("%s: %d of %d row(s) skipped as bad (one warning each above); acc@0.5 is over the other %d",
                       task.split_path(subset), skipped, total, n)
    summary = {
        "acc@0.5": round(hits / n, 6), "n": n, "rows": total, "skipped": skipped, "mean_iou": round(ious / n, 6),
        "subset": subset, "data": str(args.data), "checkpoint": str(path),
        "checkpoint_sha256": file_sha256(path), "decoding": dict(gen_args, constrained=not task.cfg.unconstrained_decoding),
        "command": command,
    }
    atomic_write_text(out_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"acc@0.5": summary["acc@0.5"], "n": n, "skipped": skipped, "results": str(out_dir)}))
    return summary


if __name__ == "__main__":
    sys.exit(main())
