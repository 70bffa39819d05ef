"""Task similarity from Fisher task embeddings, exactly as π-Tuning's notebook computes it.

For tasks a, b and one parameter tensor k, with e_a, e_b ≥ 0 the flattened diagonal Fishers::

    n_a = e_a / (e_a + e_b + 1e-6)       n_b = e_b / (e_a + e_b + 1e-6)    (the SAME denominator)
    sim_k(a, b) = n_a · n_b / (‖n_a‖ ‖n_b‖)

(Task2Vec's symmetric normalised cosine). The task similarity is the **mean over tensors** of
sim_k — every tensor counts once whatever its size; it is not the cosine of the concatenation.

Which tensors enter the mean follows the notebook (``specs/pi_tuning.md`` §5.3): only the upper
triangle is computed, row by row; for row a, a tensor is used only if sim_k(a, b) is finite for
**every** later task b (a zero vector gives 0/0 = NaN), and the row's pairs average over the
same tensors. The matrix is then symmetrised, its diagonal set to 1 and rounded to 4 decimals.
``skip="pair"`` instead drops a tensor only for the pair where it fails (order-independent).

Arithmetic is float64 (the notebook worked on the saved float16 arrays with numpy/scipy, where large
tensors can overflow; we do not reproduce that).
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

EPS = 1e-6
SKIP_MODES = ("row", "pair")


def tensor_similarity(e_a: Tensor, e_b: Tensor, eps: float = EPS) -> float:
    """cos(e_a / (e_a+e_b+eps), e_b / (e_a+e_b+eps)) in float64; NaN when a side is all zero."""
    a = e_a.detach().reshape(-1).to(torch.float64)
    b = e_b.detach().reshape(-1).to(torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"tensor sizes differ: {a.numel()} vs {b.numel()}")
    den = a + b + eps
    na, nb = a / den, b / den
    norm = torch.linalg.vector_norm(na) * torch.linalg.vector_norm(nb)
    if not torch.isfinite(norm) or norm == 0:
        return float("nan")
    return float((na @ nb) / norm)


def _check_layouts(embeddings: Sequence[Mapping[str, Tensor]], sources: Sequence[str]) -> None:
    from .fisher import layout_difference

    for emb, src in zip(embeddings[1:], sources[1:]):
        diff = layout_difference(embeddings[0], emb)
        if diff:
            raise ValueError(
                f"task embeddings {sources[0]} and {src} come from different piece layouts "
                f"(different PETL setups or archs): {diff}"
            )


def similarity_matrix(
    embeddings: Sequence[Mapping[str, Tensor]],
    sources: Optional[Sequence[str]] = None,
    skip: str = "row",
    decimals: Optional[int] = 4,
) -> np.ndarray:
    """[n, n] task similarities (see the module docstring); ``sources`` name the inputs in errors."""
    n = len(embeddings)
    if n == 0:
        raise ValueError("no task embeddings given")
    if skip not in SKIP_MODES:
        raise ValueError(f"skip must be one of {SKIP_MODES}, got {skip!r}")
    sources = list(sources) if sources is not None else [f"embedding {i}" for i in range(n)]
    _check_layouts(embeddings, sources)
    keys = list(embeddings[0])
    sim = np.zeros((n, n), dtype=np.float64)
    for i in range(n - 1):
        later = range(i + 1, n)
        per_key = np.array([[tensor_similarity(embeddings[i][k], embeddings[j][k]) for j in later] for k in keys])
        finite = np.isfinite(per_key)  # [keys, later]
        if skip == "row":
            use = finite.all(axis=1, keepdims=True) & finite  # a tensor failing any pair leaves the row
        else:
            use = finite
        counts = use.sum(axis=0)
        if (counts == 0).any():
            j = i + 1 + int(np.argmin(counts))
            raise ValueError(
                f"no parameter tensor gives a finite similarity between {sources[i]} and {sources[j]} "
                "(all-zero Fisher? check that the task embedding saw data)"
            )
        sim[i, i + 1:] = np.where(use, per_key, 0.0).sum(axis=0) / counts
    sim = np.triu(sim, 1)
    sim = sim + sim.T + np.eye(n)
    return np.round(sim, decimals) if decimals is not None else sim


def top_k(matrix: np.ndarray, names: Sequence[str], target: str, k: int) -> List[Tuple[str, float]]:
    """The k tasks most similar to ``target`` (itself excluded), best first; ties keep input order."""
    names = list(names)
    if target not in names:
        raise ValueError(f"--target {target!r} is not among the tasks {names}")
    others = len(names) - 1
    if k <= 0 or k > others:
        raise ValueError(f"--top-k {k}: expected 1..{others} (the number of other experts)")
    t = names.index(target)
    order = sorted((j for j in range(len(names)) if j != t), key=lambda j: -matrix[t, j])
    return [(names[j], float(matrix[t, j])) for j in order[:k]]


__all__ = ["EPS", "SKIP_MODES", "similarity_matrix", "tensor_similarity", "top_k"]
