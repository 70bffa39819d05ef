"""ORCA's layout for tables with categorical columns (`specs/orca.md` §3.3).

Numeric-only tables stay ``(N, F)`` rows; the tabular embedder turns them into one token (all
features as channels) or one token per feature. A table with categorical columns becomes
``(N, W, F)``: each categorical column one-hot encoded, each numeric column a single value in slot
0, all zero-padded to the widest one-hot width ``W`` — channels = ``W``, positions = features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def onehot_layout(table: np.ndarray, categorical: Sequence[int]) -> np.ndarray:
    """``(N, F)`` table → ``(N, W, F)`` float32 with categorical columns one-hot (ORCA's layout).

    Categorical values are mapped to their rank among the column's distinct values; numeric
    columns are copied as they are (standardise them first).
    """
    if table.ndim != 2:
        raise ValueError(f"expected a 2-D table (rows, features), got shape {table.shape}")
    n, f = table.shape
    bad = [c for c in categorical if not 0 <= c < f]
    if bad:
        raise ValueError(f"categorical column index {bad[0]} outside [0, {f}) (the table has {f} columns)")
    codes = {c: np.unique(table[:, c], return_inverse=True)[1] for c in categorical}
    width = max([int(k.max()) + 1 for k in codes.values()] + [1])
    out = np.zeros((n, f, width), dtype=np.float32)
    for col in range(f):
        if col in codes:
            out[np.arange(n), col, codes[col]] = 1.0
        else:
            out[:, col, 0] = table[:, col]
    return out.transpose(0, 2, 1).copy()  # (N, F, W) -> (N, W, F): channels = W, sequence = features
