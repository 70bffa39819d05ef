"""Optimal-transport dataset distance (OTDD, Alvarez-Melis & Fusi 2020) with ORCA's settings.

A labelled dataset is a cloud of pairs z = (x, y). The outer cost between pairs is

    C(z, z') = λ_x · ½‖x - x'‖² + λ_y · W[y, y'] / 2

where W is a label-to-label distance between the class clouds, a **constant** (no gradient).
ORCA calls it with (``specs/orca.md`` §7.3): inner W = debiased Sinkhorn divergence, cost ‖x-x'‖²,
ε = 0.1 (``inner="sinkhorn"``, ORCA's "otdd-exact") or the Bures W₂² of class Gaussians
(``inner="gaussian"``); outer = debiased Sinkhorn divergence, ε = 0.1; the target is one class.

The source side never changes during alignment, so :func:`prepare_source` computes once what
the released code recomputes on every call: the source–source block of W and the outer
self-term OT_ε(source, source). :func:`otdd` then only solves source↔target and target↔target.
``inner="emd"`` / ``outer="emd"`` swap in the exact LP (POT ``emd2``) — the reference for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from torch import Tensor

from .distances import (_check_cloud, bures_squared, entropic_ot, exact_ot, full_sq_cost,
                        gaussian_stats, half_sq_cost, sinkhorn_divergence)

INNER_METHODS = ("sinkhorn", "gaussian", "emd")
OUTER_METHODS = ("sinkhorn", "emd")


@dataclass(frozen=True)
class OTDDSettings:
    """ORCA's call: inner 'sinkhorn' (or 'gaussian'), outer 'sinkhorn', ε = 0.1, λ_x = λ_y = 1."""

    inner: str = "sinkhorn"
    outer: str = "sinkhorn"
    entreg: float = 0.1
    lambda_x: float = 1.0
    lambda_y: float = 1.0
    scaling: float = 0.5
    min_labelcount: int = 2

    def __post_init__(self):
        if self.inner not in INNER_METHODS:
            raise ValueError(f"OTDD inner method must be one of {INNER_METHODS}, got {self.inner!r}")
        if self.outer not in OUTER_METHODS:
            raise ValueError(f"OTDD outer method must be one of {OUTER_METHODS}, got {self.outer!r}")
        if self.entreg <= 0:
            raise ValueError(f"OTDD entreg must be > 0, got {self.entreg}")


@dataclass
class SourceSide:
    """Constants of the source dataset: features, labels 0..K-1, W_ss and the outer self-term."""

    xs: Tensor                       # (N, d) detached
    ys: Tensor                       # (N,) long, 0..K-1
    labels: List[int]                # original label value of each index
    settings: OTDDSettings
    label_dist: Tensor               # (K, K) float64, W between source classes
    self_term: Optional[Tensor]      # OT_ε(source, source) of the outer problem (None for 'emd')
    stats: list = field(default_factory=list)  # per class (μ, Σ) for inner='gaussian'

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return self.xs.shape[1]


def _split_classes(x: Tensor, y: Tensor) -> List[Tensor]:
    return [x[y == c] for c in range(int(y.max()) + 1)]


def _check_counts(clouds: List[Tensor], labels: List[int], what: str, minimum: int) -> None:
    for cloud, label in zip(clouds, labels):
        if cloud.shape[0] < minimum:
            raise ValueError(f"{what} class {label} has {cloud.shape[0]} sample(s); OTDD needs at "
                             f"least {minimum} per class (min_labelcount)")


def _remap(y: Tensor, what: str) -> tuple[Tensor, List[int]]:
    if y.dim() != 1:
        raise ValueError(f"{what} labels must be one integer per row, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point:
        if not torch.isfinite(y).all() or (y != y.round()).any():
            raise ValueError(f"{what} labels must be integers (OTDD needs class labels)")
        y = y.long()
    values, inverse = torch.unique(y, sorted=True, return_inverse=True)
    return inverse, [int(v) for v in values]


def _label_distance(a: Tensor, b: Tensor, stats_a, stats_b, s: OTDDSettings) -> float:
    """W between two class clouds (a constant: computed without gradient)."""
    with torch.no_grad():
        if s.inner == "gaussian":
            return float(bures_squared(*stats_a, *stats_b))
        if s.inner == "emd":
            return float(exact_ot(a.double(), b.double(), full_sq_cost))
        return float(sinkhorn_divergence(a, b, full_sq_cost, s.entreg, s.scaling))


def _pairwise(clouds_a, clouds_b, stats_a, stats_b, s: OTDDSettings, symmetric: bool) -> Tensor:
    out = torch.zeros(len(clouds_a), len(clouds_b), dtype=torch.float64)
    for i, a in enumerate(clouds_a):
        for j, b in enumerate(clouds_b):
            if symmetric and j <= i:
                continue  # the diagonal of a debiased / exact distance is 0
            out[i, j] = _label_distance(a, b, stats_a[i] if stats_a else None,
                                        stats_b[j] if stats_b else None, s)
    return out + out.T if symmetric else out


def _stats(clouds: List[Tensor], s: OTDDSettings) -> list:
    return [gaussian_stats(c.detach()) for c in clouds] if s.inner == "gaussian" else []


def _augment(x: Tensor, label_index: Tensor) -> Tensor:
    return torch.cat([x, label_index.to(x.dtype).unsqueeze(1)], dim=1)


def _outer_cost(w: Tensor, s: OTDDSettings) -> Callable[[Tensor, Tensor], Tensor]:
    """C(z, z') = λ_x·½‖x-x'‖² + λ_y·W[y, y']/2 on clouds whose last column is the label index."""

    def cost(za: Tensor, zb: Tensor) -> Tensor:
        la = za[..., -1].detach().round().long()  # (B, n)
        lb = zb[..., -1].detach().round().long()  # (B, m)
        feat = half_sq_cost(za[..., :-1], zb[..., :-1])  # (B, n, m)
        wl = w.to(feat.dtype)
        lab = torch.stack([wl[ia][:, ib] for ia, ib in zip(la.reshape(-1, la.shape[-1]),
                                                            lb.reshape(-1, lb.shape[-1]))])
        return s.lambda_x * feat + s.lambda_y * lab.reshape(feat.shape) / 2

    return cost


def _outer_ot(za: Tensor, zb: Tensor, w: Tensor, s: OTDDSettings) -> Tensor:
    cost = _outer_cost(w, s)
    if s.outer == "emd":
        return exact_ot(za, zb, cost)
    return entropic_ot(za, zb, cost, s.entreg, s.scaling)


def prepare_source(xs: Tensor, ys: Optional[Tensor], settings: OTDDSettings = OTDDSettings()) -> SourceSide:
    """Compute once the source constants: labels, W_ss, class statistics, OT_ε(source, source)."""
    _check_cloud(xs, "OTDD source features")
    if ys is None:
        raise ValueError("OTDD needs source labels (ys); give the features file labels or "
                         "k-means pseudo-labels")
    if ys.shape[0] != xs.shape[0]:
        raise ValueError(f"OTDD source has {xs.shape[0]} feature rows but {ys.shape[0]} labels")
    xs = xs.detach()
    yi, labels = _remap(ys, "OTDD source")
    clouds = _split_classes(xs, yi)
    _check_counts(clouds, labels, "OTDD source", settings.min_labelcount)
    stats = _stats(clouds, settings)
    w_ss = _pairwise(clouds, clouds, stats, stats, settings, symmetric=True)
    self_term = None
    if settings.outer == "sinkhorn":
        with torch.no_grad():
            z = _augment(xs, yi)
            self_term = _outer_ot(z, z, w_ss, settings)
    return SourceSide(xs, yi, labels, settings, w_ss, self_term, stats)


def otdd(source: SourceSide, target: Tensor, target_labels: Optional[Tensor] = None) -> Tensor:
    """OTDD(source, target) — differentiable in `target` (n, d); one target class if no labels.

    Debiased for the Sinkhorn outer problem: OT_ε(s, t) - ½OT_ε(s, s) - ½OT_ε(t, t), with the
    source self-term and W_ss taken from `source` (computed once by :func:`prepare_source`).
    """
    s = source.settings
    _check_cloud(target, "OTDD target features")
    if target.shape[1] != source.dim:
        raise ValueError(f"OTDD target has {target.shape[1]} features, the source {source.dim}")
    if target_labels is None:
        ti, tlabels = torch.zeros(target.shape[0], dtype=torch.long, device=target.device), [0]
    else:
        ti, tlabels = _remap(target_labels, "OTDD target")
    k_s, k_t = source.num_classes, len(tlabels)
    t_clouds = _split_classes(target.detach(), ti)
    _check_counts(t_clouds, tlabels, "OTDD target", s.min_labelcount)
    s_clouds = _split_classes(source.xs, source.ys)
    t_stats = _stats(t_clouds, s)
    w = torch.zeros(k_s + k_t, k_s + k_t, dtype=torch.float64)
    w[:k_s, :k_s] = source.label_dist
    w_st = _pairwise(s_clouds, t_clouds, source.stats, t_stats, s, symmetric=False)
    w[:k_s, k_s:], w[k_s:, :k_s] = w_st, w_st.T
    w[k_s:, k_s:] = _pairwise(t_clouds, t_clouds, t_stats, t_stats, s, symmetric=True)
    w = w.to(target.device)
    zs = _augment(source.xs.to(target.dtype), source.ys.to(target.device))
    zt = _augment(target, ti + k_s)
    cross = _outer_ot(zs, zt, w, s)
    if s.outer == "emd":
        return cross  # the exact OT of a cloud with itself is 0
    self_t = _outer_ot(zt, zt, w, s)
    return cross - 0.5 * source.self_term.to(cross) - 0.5 * self_t


def otdd_uncached(xs: Tensor, ys: Tensor, target: Tensor, target_labels: Optional[Tensor] = None,
                  settings: OTDDSettings = OTDDSettings()) -> Tensor:
    """The released code's way: every source constant recomputed on each call (reference path)."""
    return otdd(prepare_source(xs, ys, settings), target, target_labels)
