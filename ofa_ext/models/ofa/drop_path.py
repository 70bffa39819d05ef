"""Stochastic depth ("drop path"): drop a whole residual branch per sample.

OFA uses it in two places with different layouts, so the batch dimension is an argument:
the ResNet trunk works on [B, C, H, W] (batch_dim 0) and the transformer layers on [T, B, C]
(batch_dim 1). Kept branches are divided by the keep probability so that eval needs no rescale.
"""

import torch
from torch import nn


def drop_path(x: torch.Tensor, rate: float, training: bool, batch_dim: int = 0) -> torch.Tensor:
    """Zero the branch `x` for a random subset of samples (probability `rate`) during training."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    shape = [1] * x.dim()
    shape[batch_dim] = x.shape[batch_dim]
    mask = x.new_empty(shape).bernoulli_(keep)  # one draw per sample
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; has no parameters (official keys are unchanged)."""

    def __init__(self, rate: float = 0.0, batch_dim: int = 0) -> None:
        super().__init__()
        self.rate = float(rate)
        self.batch_dim = batch_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training, self.batch_dim)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, batch_dim={self.batch_dim}"


def linear_rates(max_rate: float, n: int) -> list[float]:
    """Per-layer rates `linspace(0, max_rate, n)`: the first layer never drops (OFA's schedule)."""
    # plain Python so that building on the meta device works
    if n <= 1:
        return [0.0] * max(n, 0)
    return [float(max_rate) * i / (n - 1) for i in range(n)]
