"""Boxes ↔ OFA location tokens (refcoco.md §4).

A box in original pixels is scaled by the resize ratios, divided by ``max_image_size`` (not by the
patch size) and mapped to ``num_bins`` bins with round-half-to-even; ``<bin_k>`` has id
``len(dict) - num_bins + k``. The inverse multiplies back and divides by the ratios. Both run in
float32 torch ops in OFA's order so that bins and decoded boxes match the official code bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]


@dataclass
class QuantisedBox:
    """What the dataset keeps from quantising one box (all float32 / int64 tensors)."""

    region: torch.Tensor  # [4] original-pixel box as parsed (float32)
    normalised: torch.Tensor  # [4] resized box / max_image_size
    quant_float: torch.Tensor  # [4] normalised * (num_bins - 1), the value that is rounded
    bins: torch.Tensor  # [4] int64 bin indices
    w_resize_ratio: torch.Tensor  # scalar float32, patch_size / width
    h_resize_ratio: torch.Tensor  # scalar float32, patch_size / height


def resize_ratios(width: int, height: int, patch_image_size: int) -> tuple:
    """``(w_ratio, h_ratio)`` as OFA stores them: float32 results of ``patch_size / size``."""
    size = torch.tensor([patch_image_size, patch_image_size])
    return size[1] / width, size[0] / height


def quantise_box(
    box: ArrayLike,
    width: int,
    height: int,
    patch_image_size: int = 512,
    max_image_size: int = 512,
    num_bins: int = 1000,
) -> QuantisedBox:
    """Bins of an ``x0,y0,x1,y1`` box of a ``width``×``height`` image resized to a square patch.

    The box is scaled with float32 casts of the float64 ratios (as OFA's resize transform does) and
    no clipping is applied: a box outside ``[0, max_image_size]`` gives bins outside ``[0, num_bins)``,
    which :func:`bins_to_token_ids` rejects.
    """
    region = torch.as_tensor(np.asarray(box, dtype=np.float64).tolist(), dtype=torch.float32).reshape(4)
    rw = float(patch_image_size) / float(width)
    rh = float(patch_image_size) / float(height)
    scaled = region * torch.as_tensor([rw, rh, rw, rh], dtype=torch.float32)
    normalised = scaled / max_image_size
    quant_float = normalised * (num_bins - 1)
    bins = quant_float.round().long()  # torch.round: halves to even
    w_ratio, h_ratio = resize_ratios(width, height, patch_image_size)
    return QuantisedBox(region, normalised, quant_float, bins, w_ratio, h_ratio)


def bins_to_token_ids(bins: ArrayLike, dictionary_size: int, num_bins: int = 1000) -> torch.Tensor:
    """Dictionary ids of ``<bin_k>`` tokens (the bins are the last ``num_bins`` entries)."""
    b = torch.as_tensor(bins, dtype=torch.long)
    if b.numel() and (int(b.min()) < 0 or int(b.max()) >= num_bins):
        raise ValueError(
            f"bin indices {b.tolist()} outside [0, {num_bins}): the box lies outside the image "
            f"after resizing (boxes are divided by max_image_size)"
        )
    return b + (dictionary_size - num_bins)


def tokens_to_boxes(
    tokens: ArrayLike,
    w_resize_ratios: ArrayLike,
    h_resize_ratios: ArrayLike,
    dictionary_size: int,
    num_bins: int = 1000,
    max_image_size: int = 512,
) -> torch.Tensor:
    """Decode ``[B, 4]`` location-token ids to original-pixel float32 boxes, as OFA's evaluation.

    ``(tok - len(dict) + num_bins) / (num_bins - 1) * max_image_size / ratio``; not clipped, not
    re-ordered (tokens that are not bins give meaningless, possibly negative, boxes, as in OFA).
    """
    t = torch.as_tensor(tokens, dtype=torch.long)
    if t.dim() != 2 or t.size(1) < 4:
        raise ValueError(f"tokens must have shape [B, >=4], got {tuple(t.shape)}")
    boxes = (t[:, :4] - dictionary_size + num_bins) / (num_bins - 1) * max_image_size
    wr = torch.as_tensor(w_resize_ratios, dtype=torch.float32).reshape(-1, 1)
    hr = torch.as_tensor(h_resize_ratios, dtype=torch.float32).reshape(-1, 1)
    boxes[:, ::2] /= wr
    boxes[:, 1::2] /= hr
    return boxes
