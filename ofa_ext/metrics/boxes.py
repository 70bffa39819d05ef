"""IoU and Acc@0.5 hits for grounding, exactly as OFA scores RefCOCO (refcoco.md §8.2).

Intersections are not clamped at zero (a hit additionally needs a positive intersection width and
height), there is no "+1" pixel convention and the denominator carries ``+ 1e-6``. Inputs may be torch
tensors or numpy arrays; results are torch tensors in the dtype of the inputs (float32 in OFA).
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np
import torch

BoxArray = Union[torch.Tensor, np.ndarray]


class BoxOverlap(NamedTuple):
    iou: torch.Tensor  # [N]
    inter_w: torch.Tensor  # [N], may be negative
    inter_h: torch.Tensor  # [N], may be negative


def _as_boxes(x: BoxArray, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    if t.dim() != 2 or t.size(1) != 4:
        raise ValueError(f"{name} must have shape [N, 4] (x0, y0, x1, y1), got {tuple(t.shape)}")
    return t


def box_overlap(pred: BoxArray, gold: BoxArray) -> BoxOverlap:
    """Row-wise IoU of ``pred[i]`` with ``gold[i]`` plus the signed intersection sides."""
    p, g = _as_boxes(pred, "pred"), _as_boxes(gold, "gold")
    if p.shape != g.shape:
        raise ValueError(f"pred and gold must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    g = g.to(device=p.device, dtype=p.dtype)
    top_left = torch.maximum(p[:, :2], g[:, :2])
    bottom_right = torch.minimum(p[:, 2:], g[:, 2:])
    inter_w = bottom_right[:, 0] - top_left[:, 0]
    inter_h = bottom_right[:, 1] - top_left[:, 1]
    inter = inter_w * inter_h
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_g = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    iou = inter / (area_p + area_g - inter + 1e-6)
    return BoxOverlap(iou, inter_w, inter_h)


def box_iou(pred: BoxArray, gold: BoxArray) -> torch.Tensor:
    """OFA's IoU of corresponding rows of two ``[N, 4]`` box arrays."""
    return box_overlap(pred, gold).iou


def true_iou(pred: BoxArray, gold: BoxArray) -> torch.Tensor:
    """IoU in [0, 1] of corresponding rows: the intersection and the areas are clamped at zero, so
    disjoint (or reversed) boxes give 0, not OFA's negative ratio. For reporting; hits use OFA's rule."""
    p, g = _as_boxes(pred, "pred"), _as_boxes(gold, "gold")
    _, inter_w, inter_h = box_overlap(p, g)
    g = g.to(device=p.device, dtype=p.dtype)
    inter = inter_w.clamp(min=0) * inter_h.clamp(min=0)
    area_p = (p[:, 2] - p[:, 0]).clamp(min=0) * (p[:, 3] - p[:, 1]).clamp(min=0)
    area_g = (g[:, 2] - g[:, 0]).clamp(min=0) * (g[:, 3] - g[:, 1]).clamp(min=0)
    union = area_p + area_g - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def grounding_hits(pred: BoxArray, gold: BoxArray, threshold: float = 0.5) -> torch.Tensor:
    """1.0 where ``iou >= threshold`` and the boxes truly intersect, else 0.0 (Acc@0.5 summands)."""
    iou, iw, ih = box_overlap(pred, gold)
    return ((iou >= threshold) & (iw > 0) & (ih > 0)).to(iou.dtype)
