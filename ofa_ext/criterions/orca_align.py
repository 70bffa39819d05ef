"""Criterion ``orca_align``: ORCA's alignment loss, and the task loss in the refine stage.

Align batches (built by task ``orca``) carry one embedded cloud per target (pseudo-)class. The
loss is Σ_c w_c · D(source, F_t,c) with D from the one distance library
(:class:`ofa_ext.metrics.alignment.AlignmentObjective`: OTDD exact / Gaussian, MMD, L2), w_c = n_c/N;
a single backward of the sum gives the gradient ORCA accumulates class by class. On several
processes every rank's shard is gathered first, so each rank evaluates D on the full clouds; the
loss and the per-class distances are logged by rank 0 only (they are the same on every rank),
and ``sample_size`` is 1 per rank so that fairseq's rescaling (× world size / Σ sample_size)
leaves the 1-process gradient. Refine batches go to ``crossmodal_loss`` unchanged.
"""


from dataclasses import dataclass

import torch
import torch.distributed as dist
from fairseq import metrics
from fairseq.criterions import register_criterion

from ..metrics.alignment import gather_cloud, weighted_alignment
from ..models.bodies.base import mean_pool
from .crossmodal_loss import CrossmodalLoss, CrossmodalLossConfig

ALIGN_KEY = "orca_align"


@dataclass
class OrcaAlignConfig(CrossmodalLossConfig):
    pass


def embedded_features(model, x: torch.Tensor) -> torch.Tensor:
    """(B, ...) target inputs → (B, d): the embedder's tokens mean-pooled (what ORCA aligns)."""
    tokens, padding_mask = model.embedder(x)  # (B, T, d)
    return mean_pool(tokens, padding_mask)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@register_criterion("orca_align", dataclass=OrcaAlignConfig)
class OrcaAlignCriterion(CrossmodalLoss):
    def forward(self, model, sample, reduce: bool = True):
        if ALIGN_KEY not in sample:
            return super().forward(model, sample, reduce)
        return self.align_forward(model, sample[ALIGN_KEY])

    def align_forward(self, model, batch: dict):
        """`batch`: ``shards`` {class: local rows (n_r, ...)}, ``weights`` {class: w_c}, ``update``."""
        clouds = {c: gather_cloud(embedded_features(model, x)) for c, x in batch["shards"].items()}
        maxsamples = self.task.cfg.orca_maxsamples
        for c, cloud in clouds.items():
            if cloud.shape[0] > maxsamples:
                raise ValueError(f"orca_align: class {c} cloud has {cloud.shape[0]} rows, more than "
                                 f"--orca-maxsamples {maxsamples} allows")
        loss, per_class = weighted_alignment(self.task.alignment, clouds, batch["weights"],
                                             self.task.cfg.seed, batch["update"])
        first = float(_rank() == 0)
        n_local = sum(int(x.shape[0]) for x in batch["shards"].values())
        log = {"align_loss": float(loss.detach()) * first, "align_updates": first,
               "nsentences": n_local, "ntokens": n_local, "sample_size": 1}
        for c, d in per_class.items():
            log[f"align_d{c}"] = d * first
        return loss, 1, log

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Align updates log ``align_loss`` and ``align_d<class>`` (not ``loss``, so epoch averages
        of the task loss stay clean); every update logs ``orca_lr``, the lr the task set."""
        total = lambda key: sum(float(log.get(key, 0)) for log in logging_outputs)  # noqa: E731
        if total("orca_lr_n"):
            metrics.log_scalar("orca_lr", total("orca_lr") / total("orca_lr_n"), 1, round=8)
        updates = total("align_updates")
        if updates == 0:
            return super().reduce_metrics(logging_outputs)
        metrics.log_scalar("align_loss", total("align_loss") / updates, updates, round=6)
        keys = sorted({k for log in logging_outputs for k in log if k.startswith("align_d")})
        for key in keys:
            metrics.log_scalar(key, total(key) / updates, updates, round=6)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def average_gradients(module: torch.nn.Module) -> None:
    """Make every rank's gradients the mean over ranks (the gather's backward gives each rank
    world_size × its shard's share; the mean is the 1-process gradient). No-op on 1 process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
