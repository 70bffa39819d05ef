"""``ofa-task-similarity``: pairwise task similarities from Fisher task embeddings (π-Tuning step 2).

Example::

    ofa-task-similarity results/task_emb/refcoco.safetensors results/task_emb/refcocoplus.safetensors \\
        results/task_emb/refcocog.safetensors --out results/task_similarity --target refcocog --top-k 2

Writes into ``--out``: ``task_sim.csv`` (π-Tuning's notebook format: a header of task names, one
row per task in the same order), ``task_sim.md`` (Markdown table), ``task_sim.png`` (annotated
heatmap) and, with ``--target``, ``top_k_<target>.json``, which names the target's own expert plus
the k most similar experts (``experts``, the list for ``--interpolation-experts``) and every task's
similarity to the target (``similarities``, a file ``--interpolation-similarities`` accepts).
Task names come from each embedding's metadata (``task``) or, failing that, its file stem.
The similarity is defined in :mod:`ofa_ext.metrics.similarity`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..metrics.fisher import load_task_embedding
from ..metrics.similarity import SKIP_MODES, similarity_matrix, top_k
from ..utils.errors import cli_entry

DEFAULT_OUT = "results/task_similarity"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofa-task-similarity", description=__doc__.split("\n")[0])
    p.add_argument("embeddings", nargs="+", help="task-embedding files (.safetensors written by the task-embedding pass)")
    p.add_argument("--names", default=None, help="comma list of task names (default: metadata 'task' or file stem)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--target", default=None, help="task whose most similar experts to list")
    p.add_argument("--top-k", type=int, default=None, help="how many similar experts to list (with --target)")
    p.add_argument("--skip", choices=SKIP_MODES, default="row",
                   help="tensors with a NaN similarity: 'row' drops them for the whole row as π-Tuning's notebook; "
                        "'pair' only for that pair")
    p.add_argument("--no-plot", action="store_true", help="skip the heatmap")
    return p


def markdown_table(matrix: np.ndarray, names: Sequence[str]) -> str:
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {n} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for n, row in zip(names, matrix)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, matrix: np.ndarray, names: Sequence[str]) -> None:
    rows = [",".join(names)] + [",".join(repr(float(v)) for v in row) for row in matrix]
    path.write_text("\n".join(rows) + "\n")


def plot_heatmap(path: Path, matrix: np.ndarray, names: Sequence[str]) -> None:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font-search chatter when a caller logs DEBUG
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * n))
    off = matrix[~np.eye(n, dtype=bool)]
    vmin = float(off.min()) if off.size else 0.0
    im = ax.imshow(matrix, cmap="viridis", vmin=min(vmin, 1.0), vmax=1.0)
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=names)
    mid = (min(vmin, 1.0) + 1.0) / 2
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.4f}", ha="center", va="center", fontsize=8,
                    color="black" if matrix[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title("task similarity (Fisher, π-Tuning)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@cli_entry("ofa-task-similarity")
def main(argv: Optional[List[str]] = None) -> int:
    return _run(build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    embeddings, metas = [], []
    for path in args.embeddings:
        t, m = load_task_embedding(path)
        embeddings.append(t)
        metas.append(m)
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(args.embeddings):
            raise SystemExit(f"--names has {len(names)} names for {len(args.embeddings)} embeddings")
    else:
        names = [m.get("task") or Path(p).stem for p, m in zip(args.embeddings, metas)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SystemExit(f"duplicate task names {dup}: pass --names to tell the embeddings apart")
    if (args.target is None) != (args.top_k is None):
        raise SystemExit("--target and --top-k go together")

    matrix = similarity_matrix(embeddings, sources=args.embeddings, skip=args.skip)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "task_sim.csv", matrix, names)
    (out / "task_sim.md").write_text(markdown_table(matrix, names))
    if not args.no_plot:
        plot_heatmap(out / "task_sim.png", matrix, names)
    print(markdown_table(matrix, names), end="")

    if args.target is not None:
        best = top_k(matrix, names, args.target, args.top_k)
        t = names.index(args.target)
        expert_of = {n: m.get("expert") for n, m in zip(names, metas)}
        record = {
            "target": args.target,
            "k": args.top_k,
            "top_k": [{"task": n, "similarity": s, "expert": expert_of[n]} for n, s in best],
            "experts": [expert_of[args.target]] + [expert_of[n] for n, _ in best],
            "similarities": {n: float(matrix[t, j]) for j, n in enumerate(names)},
        }
        path = out / f"top_k_{args.target}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\ntop-{args.top_k} tasks most similar to {args.target}:")
        for rank, (n, s) in enumerate(best, 1):
            print(f"{rank:>3}  {n:<24} {s:.4f}  {expert_of[n] or ''}")
        if all(record["experts"]):
            print(f"--interpolation-experts {','.join(record['experts'])} --interpolation-similarities {path}")
    print(f"wrote {out}/task_sim.csv, task_sim.md" + ("" if args.no_plot else ", task_sim.png"), file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
