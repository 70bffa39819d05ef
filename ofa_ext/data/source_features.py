"""Source-feature files for ORCA: a body's own input embedding of in-modality data.

A file is safetensors holding ``xs`` ``(N, T, d)`` float32 (the body's embedding-layer output,
before any encoder layer), ``padding_mask`` ``(N, T)`` bool (True = pad) and ``ys`` ``(N,)``
int64, with a JSON header naming the body (spec and signature), the corpus, the tokenizer, ``T``
and where the labels come from (the corpus's own or k-means pseudo-labels). Alignment consumes
the mean-pooled rows (over non-pad tokens); the token-level array is kept for PaRe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor

from ..utils.files import atomic_path

FORMAT = "ofa_ext.source_features"
VERSION = "1"
PathLike = Union[str, Path]


@dataclass
class SourceFeatures:
    xs: Tensor            # (N, T, d)
    padding_mask: Tensor  # (N, T) bool, True = pad
    ys: Tensor            # (N,) long
    meta: Dict[str, Any]

    @property
    def width(self) -> int:
        return self.xs.shape[-1]

    def pooled(self) -> Tensor:
        """(N, d): mean over the non-pad tokens of each row."""
        keep = (~self.padding_mask).unsqueeze(-1).to(self.xs.dtype)  # (N, T, 1)
        return (self.xs * keep).sum(1) / keep.sum(1).clamp_min(1)


def save_source_features(path: PathLike, xs: Tensor, padding_mask: Tensor, ys: Tensor,
                         meta: Dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    if xs.dim() != 3 or padding_mask.shape != xs.shape[:2] or ys.shape != xs.shape[:1]:
        raise ValueError(f"source features: xs (N, T, d), padding_mask (N, T), ys (N,) expected, got "
                         f"{tuple(xs.shape)}, {tuple(padding_mask.shape)}, {tuple(ys.shape)}")
    meta = {**meta, "rows": xs.shape[0], "T": xs.shape[1], "width": xs.shape[2]}
    tensors = {"xs": xs.detach().float().contiguous(), "padding_mask": padding_mask.bool().contiguous(),
               "ys": ys.long().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": FORMAT, "format_version": VERSION,
                                           "meta": json.dumps(meta, sort_keys=True)})
    return path


def load_source_features(path: PathLike, option: str = "--orca-source-features",
                         width: Optional[int] = None, body_kind: Optional[str] = None) -> SourceFeatures:
    """Read and check a file; one line naming `option` and the file for anything unusable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such file (make one with ofa-source-features)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{option} {path}: not a safetensors file ({e})") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{option} {path}: not an ofa-source-features file (header format="
                         f"{header.get('format')!r})")
    meta = json.loads(header.get("meta", "{}"))
    if "xs" not in tensors:
        raise ValueError(f"{option} {path}: no 'xs' tensor")
    xs = tensors["xs"]
    if xs.dim() != 3:
        raise ValueError(f"{option} {path}: 'xs' must be (N, T, d), got {tuple(xs.shape)}")
    if not torch.isfinite(xs).all():
        raise ValueError(f"{option} {path}: 'xs' contains NaN or infinite values")
    mask = tensors.get("padding_mask", torch.zeros(xs.shape[:2], dtype=torch.bool))
    ys = tensors.get("ys")
    if ys is None or ys.numel() == 0:
        raise ValueError(f"{option} {path}: no labels ('ys'); OTDD needs source classes (write the file "
                         "with --labels kmeans)")
    if ys.shape != xs.shape[:1]:
        raise ValueError(f"{option} {path}: {ys.shape[0]} labels for {xs.shape[0]} rows")
    if width is not None and xs.shape[-1] != width:
        raise ValueError(f"{option} {path}: features of width {xs.shape[-1]} (body {meta.get('body_kind')!r}), "
                         f"but the model's body has width {width}")
    if body_kind is not None and meta.get("body_kind") not in (None, body_kind):
        raise ValueError(f"{option} {path}: features of body {meta.get('body_kind')!r}, but the model's body is "
                         f"{body_kind!r}")
    return SourceFeatures(xs, mask, ys, meta)
