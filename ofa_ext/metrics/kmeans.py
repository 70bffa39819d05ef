"""k-means pseudo-labels for targets without classes (ORCA ``infer_labels``, ``specs/orca.md`` §6).

Regression, dense and multi-label targets are flattened to one vector per sample and clustered
into k pseudo-classes: ``sklearn.cluster.k_means`` up to 10,000 rows, ``MiniBatchKMeans``
(batch 10,000) above, as the released code does. The seed is fixed and the clusters are
renumbered by first appearance, so every rank (and every rerun) gets the same labels.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]
FULL_KMEANS_LIMIT = 10_000


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]  # cluster ids in order of first appearance
    remap = np.empty(labels.max() + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels]


def pseudo_labels(y: ArrayLike, k: int = 10, seed: int = 0) -> np.ndarray:
    """Cluster the flattened targets `y` (N, ...) into at most k classes; returns (N,) int64.

    k is lowered to the number of distinct target vectors when there are fewer.
    """
    from sklearn.cluster import MiniBatchKMeans, k_means

    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.shape[0] == 0:
        raise ValueError("pseudo_labels: no targets to cluster")
    flat = arr.reshape(arr.shape[0], -1).astype(np.float64)
    if not np.isfinite(flat).all():
        raise ValueError("pseudo_labels: targets contain NaN or infinite values")
    if k < 1:
        raise ValueError(f"pseudo_labels: k must be >= 1, got {k}")
    k = min(k, len(np.unique(flat, axis=0)))
    if flat.shape[0] <= FULL_KMEANS_LIMIT:
        _, labels, _ = k_means(flat, n_clusters=k, random_state=seed, n_init=10)
    else:
        labels = MiniBatchKMeans(n_clusters=k, batch_size=FULL_KMEANS_LIMIT, random_state=seed,
                                 n_init=3).fit_predict(flat)
    return _first_appearance(np.asarray(labels, dtype=np.int64))


def class_weights(labels: ArrayLike) -> dict[int, float]:
    """ORCA's w_c = n_c / N for every class present."""
    arr = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    values, counts = np.unique(arr, return_counts=True)
    return {int(v): float(c) / arr.shape[0] for v, c in zip(values, counts)}
