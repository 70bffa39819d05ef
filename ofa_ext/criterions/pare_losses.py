"""PaRe's training loss (`specs/pare.md` §6) as pure functions; the criterion only wires them up.

With ``ℓ`` the target task loss, ``out`` the plain target prediction, ``out_mix`` / ``out_src`` the
target / source heads on the mixed tokens and λ = k / N::

    total = ℓ(out, y_t) + w · [(1 − λ) · ℓ(out_mix, y_t) + λ · ℓ_src]

``w`` by task type (:data:`AUX_WEIGHTS`): 1.0 for 2-D classification (the released ``twocls``,
``ℓ_src = CE(out_src, y_s)``), 0.3 for 2-D dense (``ℓ_src = BCEWithLogits(out_mix, m_s)``, ``m_s``
the binarised source mask), 0.1 for 1-D (``ℓ_src = CE(out_src, y_s)``). All terms use one
reduction (fairseq sums; the trainer divides by the sample size), so the three terms can be logged
as sums and reduced exactly across ranks. Evaluation never calls this: it scores ``out`` alone.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

AUX_WEIGHTS = {"2d-classification": 1.0, "2d-dense": 0.3, "1d": 0.1}
VOC_IGNORE = 255  # PASCAL VOC's "void" label, a 0 in the binarised mask


def pare_aux_weight(task_type: str) -> float:
    """The released weight of the mixed-sample terms for ``task_type`` (a key of AUX_WEIGHTS)."""
    if task_type not in AUX_WEIGHTS:
        raise ValueError(f"--pare-task-type must be one of {', '.join(AUX_WEIGHTS)}, got {task_type!r}")
    return AUX_WEIGHTS[task_type]


@dataclass
class PareLossTerms:
    """The total and its three logged terms (each already reduced)."""

    total: Tensor
    target: Tensor
    mix: Tensor
    source: Tensor


def pare_loss(target: Tensor, mix: Tensor, source: Tensor, lam: float, aux_weight: float) -> PareLossTerms:
    """``target + aux_weight · ((1 − lam) · mix + lam · source)``."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"PaRe's λ = k / N must lie in [0, 1], got {lam}")
    total = target + aux_weight * ((1.0 - lam) * mix + lam * source)
    return PareLossTerms(total, target, mix, source)


def source_class_loss(logits: Tensor, labels: Tensor, reduction: str = "sum") -> Tensor:
    """Cross-entropy of the source head [B, C_s] on the source labels [B]."""
    if labels.min() < 0 or labels.max() >= logits.shape[-1]:
        raise ValueError(
            f"source labels must lie in [0, {logits.shape[-1]}) for the source head, "
            f"got {int(labels.min())}..{int(labels.max())}"
        )
    return F.cross_entropy(logits, labels, reduction=reduction)


def binarise_source_mask(mask: Tensor) -> Tensor:
    """Released rule for segmentation masks: 255 (void) -> 0, any class > 0 -> 1, background 0."""
    return ((mask > 0) & (mask != VOC_IGNORE)).to(torch.float32)


def source_mask_loss(mix_out: Tensor, mask: Tensor, reduction: str = "sum") -> Tensor:
    """BCE-with-logits of the dense head's output on the mixed tokens against the source mask."""
    if mix_out.shape != mask.shape:
        raise ValueError(
            f"dense PaRe compares the head output {tuple(mix_out.shape)} with the source mask "
            f"{tuple(mask.shape)}: resize the source masks to the target's output size"
        )
    return F.binary_cross_entropy_with_logits(mix_out, binarise_source_mask(mask).to(mix_out.dtype), reduction=reduction)
