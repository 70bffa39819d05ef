"""ORCA's predictors: body hidden states → the target output (`specs/orca.md` §4).

* :class:`PooledHead` — pool the tokens (``mean`` over real tokens as ORCA, or ``cls`` = first
  token) then ``Linear(d, n_out)``: logits for classification and multi-label, values for
  regression (width 1 is squeezed to ``(B,)``).
* :class:`DenseHead1D` — per-token map ``d → C_out · stack_num`` then un-stacked to
  ``(B, C_out, L)``, the inverse of the 1-D embedder's grouping. ``linear`` learns the map;
  ``pool`` is ORCA's parameter-free adaptive average over the ``d`` channels.
The heads are new: ORCA initialises them at random (PyTorch's ``nn.Linear`` init here).
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ..bodies.base import mean_pool

POOLINGS = ("mean", "cls")
HEAD_KINDS = ("classification", "multilabel", "regression", "dense1d")


def pool_tokens(hidden: Tensor, padding_mask: Optional[Tensor], pooling: str) -> Tensor:
    """(B, T, d) → (B, d): mean over non-pad tokens or the first token."""
    return hidden[:, 0] if pooling == "cls" else mean_pool(hidden, padding_mask)


class PooledHead(nn.Module):
    def __init__(self, width: int, n_out: int, pooling: str = "mean", squeeze: bool = False, device=None, dtype=None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"--head-pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling, self.squeeze = pooling, squeeze and n_out == 1
        self.linear = nn.Linear(width, n_out, device=device, dtype=dtype)

    def forward(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        out = self.linear(pool_tokens(hidden, padding_mask, self.pooling))  # (B, n_out)
        return out.squeeze(-1) if self.squeeze else out


class DenseHead1D(nn.Module):
    def __init__(self, width: int, out_channels: int, stack: int, mode: str = "linear", device=None, dtype=None):
        super().__init__()
        if mode not in ("linear", "pool"):
            raise ValueError(f"--dense-head must be 'linear' or 'pool', got {mode!r}")
        self.out_channels, self.stack, self.mode = out_channels, stack, mode
        self.linear = nn.Linear(width, out_channels * stack, device=device, dtype=dtype) if mode == "linear" else None

    def forward(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        b, t, _ = hidden.shape
        per_token = self.linear(hidden) if self.linear is not None else F.adaptive_avg_pool1d(
            hidden, self.out_channels * self.stack)  # (B, T, C_out * s)
        per_token = per_token.view(b, t, self.out_channels, self.stack)  # token t covers steps t*s .. t*s+s-1
        return per_token.permute(0, 2, 1, 3).reshape(b, self.out_channels, t * self.stack)  # (B, C_out, L)
