"""Write one packaged dataset as ``{train,valid,test}.npz`` + ``meta.json`` + ``SOURCE.md``.

Splits: the package's test split when it has one, else a seeded stratified ``test_fraction``;
validation is always held out of train (``valid_fraction``, stratified when every class allows),
so no model is selected on test data (ORCA's released configs do, `specs/orca.md` §9). Labels are
mapped to ``0..K-1`` in sorted order of the original names (kept in ``meta.json``). Numeric ``x``
is standardised per channel with statistics of the train split only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from ..utils.files import atomic_path, atomic_write_text
from .arrays import channel_stats, standardise
from .arrays_sources import SOURCES, RawArrays


def split_indices(y: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray, str]:
    """(kept, held-out, how): a seeded split holding out ``fraction`` of the rows."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
        return np.sort(keep), np.sort(held), "stratified"
    except ValueError:  # a class too small to appear on both sides (e.g. PigCVP: 2 rows per class)
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed)
        return np.sort(keep), np.sort(held), "random"


def _save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=x, y=y)


def make_splits(raw: RawArrays, seed: int, valid_fraction: float, test_fraction: float) -> Dict[str, Any]:
    """``{"splits": {name: (x, y)}, "how": {...}}`` with labels still in their original form."""
    how = {}
    if raw.x_test is None:
        keep, held, how["test"] = split_indices(raw.y_train, test_fraction, seed)
        x_pool, y_pool = raw.x_train[keep], raw.y_train[keep]
        test = (raw.x_train[held], raw.y_train[held])
    else:
        x_pool, y_pool, test = raw.x_train, raw.y_train, (raw.x_test, raw.y_test)
        how["test"] = "package"
    keep, held, how["valid"] = split_indices(y_pool, valid_fraction, seed)
    return {"splits": {"train": (x_pool[keep], y_pool[keep]), "valid": (x_pool[held], y_pool[held]),
                       "test": test}, "how": how}


def write_array_dataset(name: str, out: Path, seed: int = 1, valid_fraction: float = 0.2,
                        test_fraction: float = 0.2) -> Dict[str, Any]:
    """Write dataset ``name`` (a key of :data:`SOURCES`) under ``out``; returns the metadata."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SOURCES)}")
    for option, value in (("--valid-fraction", valid_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{option} must be in (0, 1), got {value}")
    raw = SOURCES[name]()
    parts = make_splits(raw, seed, valid_fraction, test_fraction)
    splits = parts["splits"]
    meta: Dict[str, Any] = {"dataset": name, "kind": raw.kind, "source": raw.source, "seed": seed,
                            "split": parts["how"], "valid_fraction": valid_fraction}
    if raw.labelled:
        names = np.unique(np.concatenate([y for _, y in splits.values()]))
        lookup = {v: i for i, v in enumerate(names.tolist())}
        splits = {k: (x, np.array([lookup[v] for v in y.tolist()], dtype=np.int64)) for k, (x, y) in splits.items()}
        meta.update(target="class", n_classes=len(names), class_names=[str(v) for v in names.tolist()])
    else:
        meta.update(target="none", n_classes=0)
    if raw.kind != "text":
        mean, std = channel_stats(splits["train"][0].astype(np.float64))
        splits = {k: (standardise(x, mean, std), y) for k, (x, y) in splits.items()}
        meta["standardisation"] = {"axis": "per channel (axis 1)", "from": "train",
                                   "mean": mean.tolist(), "std": std.tolist()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in splits.items():
        _save_npz(out / f"{split}.npz", x, y)
        meta.setdefault("sizes", {})[split] = int(len(x))
    meta["sample_shape"] = list(splits["train"][0].shape[1:])
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    atomic_write_text(out / "SOURCE.md", _source_note(meta))
    return meta


def _source_note(meta: Dict[str, Any]) -> str:
    src = meta["source"]
    lines = [f"# {meta['dataset']}", "", f"Written by `ofa-make-array-data {meta['dataset']} --seed {meta['seed']}`.", ""]
    lines += [f"- {k}: {v}" for k, v in src.items()]
    lines += ["", f"Splits: {meta['sizes']} (test: {meta['split']['test']}, valid: {meta['split']['valid']} "
              "hold-out of train)."]
    if "standardisation" in meta:
        lines.append("x is standardised per channel with mean/std of the train split only (values in meta.json).")
    return "\n".join(lines) + "\n"
