"""``ofa-transferability``: rank source prompts for a target task without training every transfer.

Example::

    ofa-transferability results/pt/src/*.safetensors --target-prompt results/pt/digits_xavier.safetensors \\
        --target-tokens results/pt/digits_tokens.safetensors --ground-truth results/pt/digits_gt.csv \\
        --out results/prompt_transfer/digits

Each prompt file is a safetensors file holding a ``(tokens, width)`` prompt: a piece file of an
input-prompt run (``ofa-pieces export``; its ``…input_prompt.prompt`` tensor), or a plain file with
key ``prompt`` or a single 2-D tensor. The source's name is the file stem. ``--target-tokens`` holds ``tokens``
``(N, width)``: the target's input tokens for the MMD modality gap (by default, as the spec names,
its training inputs after the body's own embedding). ``--ground-truth`` is a CSV ``source,accuracy``
of measured transfers (``prompt_transfer`` runs); every source must have a row.

Writes into ``--out``: ``scores.csv`` / ``scores.md`` (one row per source, one column per estimator,
larger = more transferable), ``correlations.csv`` / ``.md`` (Kendall τ-a and Spearman ρ ×100 per
estimator, the paper's conventions), ``summary.json`` (the options, including what entered the
MMD) and ``scatter.png`` (estimated score against measured accuracy, one panel per estimator).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..metrics.rank_correlation import kendall_tau_a, spearman_rho
from ..metrics.transferability import ESTIMATORS, PHIS, PROMPT_METRICS, estimate_sources
from ..utils.errors import cli_entry
from ..utils.files import atomic_path
from ..utils.prompts import load_prompt

DEFAULT_ESTIMATORS = "avg_cosine,modality_gap,task_gap,combined"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofa-transferability", description=__doc__.split("\n")[0])
    p.add_argument("sources", nargs="+", help="source prompt files (.safetensors), named by file stem")
    p.add_argument("--target-prompt", required=True, help="the target task's own tuned prompt (.safetensors)")
    p.add_argument("--target-tokens", default=None, help="target input tokens for the MMD (.safetensors, key 'tokens')")
    p.add_argument("--target-tokens-from", default=None, metavar="CHECKPOINT",
                   help="instead of --target-tokens: embed the target's train split with the embedder of this "
                        "checkpoint (the target's own prompt_tuning run), all non-pad tokens")
    p.add_argument("--ground-truth", default=None, help="CSV source,accuracy of measured transfers")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--estimators", default=DEFAULT_ESTIMATORS, help=f"comma subset of {','.join(ESTIMATORS)}")
    p.add_argument("--body", default=None, help="body spec for the stimulation estimator (a text body: minilm, hf:DIR)")
    p.add_argument("--stimulation-layers", type=int, default=3, help="last FFN layers whose activations are compared")
    p.add_argument("--lambda-t", type=float, default=1.0, help="weight of the task gap in the combined score")
    p.add_argument("--lambda-m", type=float, default=1.0, help="weight of the modality gap in the combined score")
    p.add_argument("--phi", choices=sorted(PHIS), default="identity", help="transform of the MMD in the combined score")
    p.add_argument("--projector-steps", type=int, default=100, help="full-batch steps of the universal projector")
    p.add_argument("--projector-lr", type=float, default=1e-3, help="Adam learning rate of the universal projector")
    p.add_argument("--projector-seeds", default="42,44,100", help="one fresh projector per seed, scores averaged")
    p.add_argument("--task-gap-metric", choices=PROMPT_METRICS, default="cosine_average",
                   help="similarity of the projected source and target prompts that scores the task gap")
    p.add_argument("--mmd-max-tokens", type=int, default=2048,
                   help="target tokens entering the MMD (a fixed random subset when there are more)")
    p.add_argument("--mmd-kernel-num", type=int, default=5, help="number of Gaussian bandwidths (ORCA's rule)")
    p.add_argument("--mmd-kernel-mul", type=float, default=2.0, help="ratio between bandwidths (ORCA's rule)")
    p.add_argument("--no-plot", action="store_true", help="skip the scatter plot")
    return p


def read_ground_truth(path: str, names: List[str]) -> np.ndarray:
    """Measured accuracy per source, in ``names`` order; a missing source is an error."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"source", "accuracy"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with columns source,accuracy")
    acc: Dict[str, float] = {}
    for i, r in enumerate(rows, start=2):
        try:
            acc[r["source"]] = float(r["accuracy"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{i}: accuracy {r['accuracy']!r} is not a number") from None
    missing = [n for n in names if n not in acc]
    if missing:
        raise ValueError(f"{path}: no ground truth for source(s) {', '.join(missing)}")
    return np.array([acc[n] for n in names])


def body_stimulation(spec: Optional[str], layers: int):
    """prompt -> binary FFN pattern of a frozen text body, anchored at its own [CLS] token."""
    if not spec:
        raise ValueError("the stimulation estimator needs --body (a text body: minilm or hf:DIR)")
    from ..api import load_body
    from ..models.crossmodal.prompt_transfer import stimulation_pattern
    from ..models.crossmodal.text_embedder import load_tokenizer

    body, tokenizer = load_body(spec), load_tokenizer(spec)
    if tokenizer.cls_token_id is None:
        raise ValueError(f"--body {spec}: its tokenizer has no [CLS]-like token to anchor the stimulation")
    with torch.no_grad():
        anchor = body.embed(torch.tensor([[tokenizer.cls_token_id]])).embeds[0]  # (1, d)
    return lambda prompt: stimulation_pattern(body, prompt, anchor, layers)


@torch.no_grad()
def embedded_train_tokens(checkpoint: str, batch_size: int = 64) -> torch.Tensor:
    """Non-pad input tokens ``(N, d)`` of the train split of a cross-modal checkpoint, through its embedder."""
    from ..utils.checkpoints import load_fairseq_checkpoint

    model, _, task = load_fairseq_checkpoint(checkpoint)
    task.load_dataset("train")
    data = task.datasets["train"]
    model.eval()
    rows = []
    for start in range(0, len(data), batch_size):
        batch = data.collater([data[i] for i in range(start, min(start + batch_size, len(data)))])
        inputs = batch["net_input"]
        embeds, pad = model.embedder(inputs["x"] if "x" in inputs else inputs["text"])
        rows.append(embeds[~pad] if pad is not None else embeds.reshape(-1, embeds.shape[-1]))
    return torch.cat(rows)


@cli_entry("ofa-transferability")
def main(argv: Optional[List[str]] = None) -> int:
    return _run(build_parser().parse_args(argv))


def _table(path_stem: Path, header: List[str], rows: List[List[object]]) -> None:
    with atomic_path(path_stem.with_suffix(".csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([header] + rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
    md = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    md += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    with atomic_path(path_stem.with_suffix(".md")) as tmp:
        Path(tmp).write_text("\n".join(md) + "\n")


def _run(args: argparse.Namespace) -> int:
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    names = [Path(p).stem for p in args.sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"source files share the name(s) {dup}: give them distinct file names")
    sources = {n: load_prompt(p) for n, p in zip(names, args.sources)}
    target = load_prompt(args.target_prompt)
    tokens = None
    if args.target_tokens and args.target_tokens_from:
        raise ValueError("give --target-tokens or --target-tokens-from, not both")
    if args.target_tokens_from:
        tokens = embedded_train_tokens(args.target_tokens_from)
    if args.target_tokens:
        tokens = load_prompt(args.target_tokens, key="tokens")
    if tokens is not None and tokens.shape[0] > args.mmd_max_tokens:
        keep = torch.randperm(tokens.shape[0], generator=torch.Generator().manual_seed(0))[:args.mmd_max_tokens]
        tokens = tokens[keep]
    gt = read_ground_truth(args.ground_truth, names) if args.ground_truth else None
    stimulation = body_stimulation(args.body, args.stimulation_layers) if "stimulation" in estimators else None
    seeds = [int(s) for s in args.projector_seeds.split(",")]
    scores = estimate_sources(
        sources, target, target_tokens=tokens, estimators=estimators, stimulation=stimulation,
        projector=dict(steps=args.projector_steps, lr=args.projector_lr, seeds=seeds, eval_metric=args.task_gap_metric),
        mmd_options=dict(kernel_num=args.mmd_kernel_num, kernel_mul=args.mmd_kernel_mul),
        lambda_t=args.lambda_t, lambda_m=args.lambda_m, phi=args.phi)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = list(scores)
    header = ["source"] + cols + (["accuracy"] if gt is not None else [])
    rows = [[n] + [float(scores[c][i]) for c in cols] + ([float(gt[i])] if gt is not None else [])
            for i, n in enumerate(names)]
    _table(out / "scores", header, rows)
    summary = {"sources": names, "estimators": cols, "options": vars(args),
               "mmd_inputs": "source prompt tokens vs " + (
                   f"the train split embedded by {args.target_tokens_from}" if args.target_tokens_from
                   else "--target-tokens") + " (input space)"}
    if gt is not None:
        corr = {c: {"kendall_tau": 100 * kendall_tau_a(gt, scores[c]), "spearman_rho": 100 * spearman_rho(gt, scores[c])}
                for c in cols}
        _table(out / "correlations", ["estimator", "kendall_tau", "spearman_rho"],
               [[c, v["kendall_tau"], v["spearman_rho"]] for c, v in corr.items()])
        summary["correlations"] = corr
        for c, v in corr.items():
            print(f"{c:<14} kendall={v['kendall_tau']:7.2f}  spearman={v['spearman_rho']:7.2f}")
        if not args.no_plot:
            plot_scatter(out / "scatter.png", scores, gt, names)
    with atomic_path(out / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"wrote {out}/scores.csv" + (", correlations.csv" if gt is not None else ""), file=sys.stderr)
    return 0


def plot_scatter(path: Path, scores: Dict[str, np.ndarray], gt: np.ndarray, names: List[str]) -> None:
    """One panel per estimator: estimated score (x) against measured transfer accuracy (y)."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(3.2 * len(scores), 3.0), squeeze=False)
    for ax, (name, s) in zip(axes[0], scores.items()):
        ax.scatter(s, gt, s=18)
        for x, y, label in zip(s, gt, names):
            ax.annotate(label, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_xlabel(name)
        ax.set_ylabel("measured accuracy")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
