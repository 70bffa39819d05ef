"""Distances between point clouds used to align a target embedder to source features (ORCA).

One implementation per idea, shared by ORCA and prompt transfer:

* :func:`l2_pairing` — ORCA's ``l2`` objective: the source is shuffled into batches the size of
  the target cloud and index-paired rows are compared (a random pairing, not a transport).
* :func:`mmd` — multi-kernel MMD with ORCA's bandwidth rule (biased V-statistic, diagonals
  included, Gaussian kernels ``exp(-‖z-z'‖² / β_q)`` without a factor 2).
* :func:`sinkhorn_divergence` / :func:`entropic_ot` — debiased / plain entropic OT on a cost
  built from the clouds (geomloss, ε-scaling; see README "ORCA" for why not POT's fixed-ε
  Sinkhorn), :func:`exact_ot` — the true LP (POT ``emd2``), :func:`bures_squared` — the closed
  form W₂² between Gaussians.

The OTDD built from these lives in :mod:`ofa_ext.metrics.otdd`.

Conventions: ε is on the cost scale (``entreg``); geomloss is called with ``p=2`` and
``blur = ε ** 0.5`` against the explicit cost we pass, so ``blur² = ε`` multiplies the KL term.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

CostFn = Callable[[Tensor, Tensor], Tensor]


def _check_cloud(x: Tensor, name: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be a (rows, features) matrix, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """‖x_i - y_j‖² for (…, n, d) and (…, m, d), clamped at 0 (the expansion can go slightly below)."""
    xx = (x * x).sum(-1).unsqueeze(-1)
    yy = (y * y).sum(-1).unsqueeze(-2)
    return (xx + yy - 2 * x @ y.transpose(-1, -2)).clamp_min(0)


def l2_pairing(source: Tensor, target: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """ORCA's ``l2``: shuffle the source into batches of len(target) rows, pair row i with row i.

    Returns the mean over batches of the mean Euclidean distance of the pairs; the last, shorter
    batch pairs with the first rows of the target. `generator` fixes the shuffle (rank-shared).
    """
    _check_cloud(source, "source")
    _check_cloud(target, "target")
    n = target.shape[0]
    perm = torch.randperm(source.shape[0], generator=generator, device="cpu").to(source.device)
    shuffled = source[perm]
    per_batch = []
    for start in range(0, shuffled.shape[0], n):
        chunk = shuffled[start:start + n]  # (k, d), k ≤ n
        per_batch.append(torch.linalg.vector_norm(target[: chunk.shape[0]] - chunk, dim=-1).mean())
    return torch.stack(per_batch).mean()


def _bandwidths(beta: Tensor, kernel_mul: float, kernel_num: int) -> list:
    """ORCA's kernel widths β / kernel_mul^(kernel_num // 2) · kernel_mul^q, q < kernel_num."""
    beta0 = beta / kernel_mul ** (kernel_num // 2)
    return [beta0 * kernel_mul**q for q in range(kernel_num)]


def mmd(
    x: Tensor,
    y: Tensor,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
    bandwidth: Optional[float] = None,
) -> Tensor:
    """Multi-kernel MMD² between clouds x (n, d) and y (m, d), ORCA's ``MMD_loss``.

    β = mean off-diagonal squared distance of the pooled cloud (no gradient) unless `bandwidth`
    is given; kernels use β_q = β / kernel_mul^(kernel_num // 2) · kernel_mul^q, q < kernel_num.
    The value is mean(K_xx) + mean(K_yy) - mean(K_xy) - mean(K_yx), diagonals included.
    """
    _check_cloud(x, "mmd x")
    _check_cloud(y, "mmd y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd: x has {x.shape[1]} features, y has {y.shape[1]}")
    n = x.shape[0]
    z = torch.cat([x, y], dim=0)
    d2 = squared_distances(z, z)  # (n+m, n+m)
    total = z.shape[0]
    if bandwidth is None:
        if total < 2:
            raise ValueError("mmd needs at least 2 points in total to estimate the bandwidth")
        beta = d2.detach().sum() / (total * total - total)
    else:
        if bandwidth <= 0:
            raise ValueError(f"mmd bandwidth must be > 0, got {bandwidth}")
        beta = torch.as_tensor(bandwidth, dtype=z.dtype, device=z.device)
    kernel = sum(torch.exp(-d2 / w) for w in _bandwidths(beta, kernel_mul, kernel_num))
    return (kernel[:n, :n].mean() + kernel[n:, n:].mean()
            - kernel[:n, n:].mean() - kernel[n:, :n].mean())


def mmd_to_target(xs: Sequence[Tensor], y: Tensor, kernel_mul: float = 2.0, kernel_num: int = 5,
                  bandwidth: Optional[float] = None) -> Tensor:
    """``mmd(x, y)`` for every cloud ``x`` of ``xs`` against one ``y`` (no gradient): the y–y
    distances, the largest block when ``y`` is a target's many input tokens, are computed once.

    The bandwidth is still each pooled cloud's own (ORCA's rule), so the values equal :func:`mmd`'s.
    """
    _check_cloud(y, "mmd y")
    with torch.no_grad():
        d2_yy = squared_distances(y, y)  # (m, m), shared by every x
        sum_yy, m = d2_yy.sum(), y.shape[0]
        values = []
        for i, x in enumerate(xs):
            _check_cloud(x, f"mmd x[{i}]")
            if x.shape[1] != y.shape[1]:
                raise ValueError(f"mmd: x[{i}] has {x.shape[1]} features, y has {y.shape[1]}")
            d2_xx, d2_xy = squared_distances(x, x), squared_distances(x, y)
            total = x.shape[0] + m
            if bandwidth is None:
                beta = (d2_xx.sum() + 2 * d2_xy.sum() + sum_yy) / (total * total - total)
            else:
                if bandwidth <= 0:
                    raise ValueError(f"mmd bandwidth must be > 0, got {bandwidth}")
                beta = torch.as_tensor(bandwidth, dtype=y.dtype, device=y.device)
            widths = _bandwidths(beta, kernel_mul, kernel_num)
            k = lambda d2: sum(torch.exp(-d2 / w) for w in widths).mean()
            values.append(k(d2_xx) + k(d2_yy) - 2 * k(d2_xy))
        return torch.stack(values)


def _samples_loss(cost: CostFn, entreg: float, debias: bool, scaling: float,
                  diameter: Optional[float]):
    from geomloss import SamplesLoss  # imported here: only the OT objectives need it

    return SamplesLoss("sinkhorn", p=2, blur=entreg**0.5, debias=debias, scaling=scaling,
                       cost=cost, backend="tensorized", diameter=diameter)


def _as_batch(x: Tensor) -> Tensor:
    return x if x.dim() == 3 else x.unsqueeze(0)


def entropic_ot(
    x: Tensor,
    y: Tensor,
    cost: CostFn,
    entreg: float = 0.1,
    scaling: float = 0.5,
    diameter: Optional[float] = None,
) -> Tensor:
    """OT_ε(α, β) = min_P ⟨P, C⟩ + ε·KL(P | a⊗b) for uniform weights, with ε-scaling (geomloss).

    `cost(x, y)` gets (1, n, D) and (1, m, D) and returns (1, n, m). Gradients reach x and y
    through the cost (envelope theorem: the potentials are constants of the last step).
    """
    loss = _samples_loss(cost, entreg, False, scaling, diameter)
    return loss(_as_batch(x), _as_batch(y)).squeeze(0)


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    cost: CostFn,
    entreg: float = 0.1,
    scaling: float = 0.5,
    diameter: Optional[float] = None,
) -> Tensor:
    """Debiased S_ε(α, β) = OT_ε(α, β) - ½OT_ε(α, α) - ½OT_ε(β, β), uniform weights (geomloss)."""
    loss = _samples_loss(cost, entreg, True, scaling, diameter)
    return loss(_as_batch(x), _as_batch(y)).squeeze(0)


def full_sq_cost(x: Tensor, y: Tensor) -> Tensor:
    """‖x - y‖² (not halved): the cost of OTDD's inner label-to-label problems."""
    return squared_distances(x, y)


def half_sq_cost(x: Tensor, y: Tensor) -> Tensor:
    """½‖x - y‖²: geomloss's own p=2 cost, the feature term of OTDD's outer problem."""
    return squared_distances(x, y) / 2


def exact_ot(x: Tensor, y: Tensor, cost: CostFn = full_sq_cost) -> Tensor:
    """The exact LP min_P ⟨P, C⟩ with uniform weights (POT ``emd2``; differentiable in C)."""
    import ot

    c = cost(x, y)
    c = c.squeeze(0) if c.dim() == 3 else c
    a = torch.full((c.shape[0],), 1.0 / c.shape[0], dtype=c.dtype, device=c.device)
    b = torch.full((c.shape[1],), 1.0 / c.shape[1], dtype=c.dtype, device=c.device)
    return ot.emd2(a, b, c)


def gaussian_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (biased, 1/n) covariance of a cloud, in float64."""
    x = x.to(torch.float64)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / x.shape[0]


def _psd_sqrt(m: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def bures_squared(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """W₂² between N(μ1, Σ1) and N(μ2, Σ2): ‖μ1-μ2‖² + tr(Σ1 + Σ2 - 2(Σ1^½ Σ2 Σ1^½)^½)."""
    root1 = _psd_sqrt(cov1)
    cross = _psd_sqrt(root1 @ cov2 @ root1)
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * torch.trace(cross)
    return value.clamp_min(0)
