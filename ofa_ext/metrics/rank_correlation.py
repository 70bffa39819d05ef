"""Rank correlations with the tie conventions of the prompt-transfer code (``specs/prompt_transfer.md`` §4.2).

The paper's tables compare, per target task, the estimated transferability of each source prompt
with its measured transfer accuracy. Its code does not use scipy's statistics, and the two differ
when there are ties, so the exact conventions are reproduced here:

* Kendall's τ is τ-a: the mean over all n(n−1)/2 pairs of ``sign(gt_i − gt_j)·sign(pred_i − pred_j)``,
  a tie on either side contributing 0 (scipy's default is τ-b, which rescales for ties).
* Spearman's ρ ranks by **descending** value, tied values sharing the **first** index of their
  group in the sorted list, and applies ``1 − 6Σd²/(n(n²−1))`` with no tie correction.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

ArrayLike = Union[Sequence[float], np.ndarray]
MIN_ITEMS = 3


def _as_pair(gt: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(gt, dtype=np.float64).reshape(-1)
    b = np.asarray(pred, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"rank correlation: {a.size} ground-truth values but {b.size} predictions")
    if a.size < MIN_ITEMS:
        raise ValueError(f"rank correlation needs at least {MIN_ITEMS} sources, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("rank correlation: values must be finite (got NaN or inf)")
    return a, b


def kendall_tau_a(gt: ArrayLike, pred: ArrayLike) -> float:
    """τ-a: mean of sign products over all unordered pairs; ties count 0."""
    a, b = _as_pair(gt, pred)
    upper = np.triu_indices(a.size, k=1)
    s = np.sign(a[:, None] - a[None, :]) * np.sign(b[:, None] - b[None, :])
    return float(s[upper].mean())


def descending_first_index_ranks(values: ArrayLike) -> np.ndarray:
    """Rank 0 for the largest value; tied values all get the first position of their group."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ordered = np.sort(v)[::-1]
    # position of the first element equal to each value in the descending list
    return (ordered.size - np.searchsorted(ordered[::-1], v, side="right")).astype(np.int64)


def spearman_rho(gt: ArrayLike, pred: ArrayLike) -> float:
    """ρ = 1 − 6Σd²/(n(n²−1)) on descending first-index ranks, without tie correction."""
    a, b = _as_pair(gt, pred)
    d = descending_first_index_ranks(a) - descending_first_index_ranks(b)
    n = a.size
    return float(1.0 - 6.0 * float((d * d).sum()) / (n * (n * n - 1)))
