"""ORCA's alignment loss Σ_c w_c · D(source, F_t,c), on one process or many.

The loss is a functional of whole point clouds, so on several processes every rank embeds its
shard of a class batch and :func:`gather_cloud` concatenates the shards with a differentiable
all-gather (``torch.distributed.nn.functional.all_gather``): each rank then evaluates D on the
same full cloud. Everything random — the class order, MMD's and L2's source draws — comes from
:func:`shared_generator` keyed by (seed, update, class), so it is identical on every rank; the
MMD bandwidth is estimated on the gathered pool, and OTDD's source constants are deterministic.

Gradient bookkeeping: the all-gather's backward sums every rank's gradient into the local
shard, so a rank holds world_size × ∂D/∂(its rows); averaging parameter gradients over ranks (as
DDP does) gives exactly the 1-process gradient of D.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from .distances import l2_pairing, mmd
from .otdd import OTDDSettings, SourceSide, otdd, prepare_source

OBJECTIVES = ("otdd-exact", "otdd-gaussian", "mmd", "l2")


def shared_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from (seed, *keys): the same stream on every rank."""
    g = torch.Generator()
    value = seed
    for k in keys:
        value = (value * 1_000_003 + int(k) + 1) % (2**63 - 1)
    g.manual_seed(value)
    return g


def class_order(classes: Sequence[int], seed: int, update: int) -> List[int]:
    """ORCA visits the classes in a fresh random order each embedder epoch (rank-shared)."""
    perm = torch.randperm(len(classes), generator=shared_generator(seed, update, -1))
    return [classes[i] for i in perm.tolist()]


class AlignmentObjective:
    """D(source, F) for one target class cloud F (n, d); the source constants prepared once.

    ``otdd-exact`` = ORCA's OTDD with debiased-Sinkhorn label distances, ``otdd-gaussian`` =
    Bures label distances, ``mmd`` = multi-kernel MMD against n source rows drawn with
    replacement, ``l2`` = ORCA's random index pairing.
    """

    def __init__(self, name: str, xs: Tensor, ys: Optional[Tensor] = None, seed: int = 0,
                 entreg: float = 0.1):
        if name not in OBJECTIVES:
            raise ValueError(f"--orca-objective must be one of {OBJECTIVES}, got {name!r}")
        if xs.dim() != 2:
            raise ValueError(f"source features must be mean-pooled (N, d), got {tuple(xs.shape)}")
        self.name, self.seed = name, seed
        self.xs = xs.detach()
        self.source: Optional[SourceSide] = None
        if name.startswith("otdd"):
            inner = "gaussian" if name == "otdd-gaussian" else "sinkhorn"
            self.source = prepare_source(self.xs, ys, OTDDSettings(inner=inner, entreg=entreg))

    @property
    def dim(self) -> int:
        return self.xs.shape[1]

    def __call__(self, target: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        if target.shape[-1] != self.dim:
            raise ValueError(f"target features have width {target.shape[-1]}, the source {self.dim}")
        if self.source is not None:
            return otdd(self.source, target)
        xs = self.xs.to(device=target.device, dtype=target.dtype)
        if self.name == "l2":
            return l2_pairing(xs, target, generator)
        draw = torch.randint(0, xs.shape[0], (target.shape[0],), generator=generator)
        return mmd(xs[draw.to(xs.device)], target)


def weighted_alignment(objective: AlignmentObjective, clouds: Mapping[int, Tensor],
                       weights: Mapping[int, float], seed: int, update: int
                       ) -> Tuple[Tensor, Dict[int, float]]:
    """Σ_c w_c · D(source, F_c) over the class clouds, and the per-class D values (for logs).

    The sum runs in ORCA's random class order; each class draws its source subsample from a
    generator keyed by (seed, update, class). Classes with one sample are skipped as ORCA does.
    """
    total: Optional[Tensor] = None
    per_class: Dict[int, float] = {}
    for c in class_order(sorted(clouds), seed, update):
        cloud = clouds[c]
        if cloud.shape[0] < 2:
            continue
        d = objective(cloud, shared_generator(seed, update, c))
        per_class[c] = float(d.detach())
        term = weights[c] * d
        total = term if total is None else total + term
    if total is None:
        raise ValueError("alignment: every class cloud has fewer than 2 samples")
    return total, per_class


def _world(group=None) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def gather_cloud(local: Tensor, group=None) -> Tensor:
    """Concatenate every rank's rows (rank order), differentiably; the identity on 1 process.

    Shards may differ in size: they are padded to the largest for the collective and cut back.
    """
    world = _world(group)
    if world == 1:
        return local
    from torch.distributed.nn.functional import all_gather

    size = torch.tensor([local.shape[0]], dtype=torch.long, device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    sizes_i = [int(s) for s in sizes]
    longest = max(sizes_i)
    pad = local.new_zeros((longest - local.shape[0],) + tuple(local.shape[1:]))
    parts = all_gather(torch.cat([local, pad], dim=0), group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes_i)], dim=0)
