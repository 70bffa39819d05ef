"""Bottleneck adapter (Houlsby style) placed on a residual branch, before the residual add.

π-Tuning puts one after self-attention and one after the FFN of every layer
(`specs/pi_tuning.md` §3.1). The up-projection starts at zero by default so that step 0 is exactly
the backbone; ``init="normal"`` reproduces π-Tuning's N(0, 0.02) draw for both projections.
"""

from typing import Optional

import torch
from torch import nn

ADAPTER_INITS = ("zero", "normal")


class Adapter(nn.Module):
    """``x + up(dropout(relu(down(x))))``: a residual bottleneck of width ``dim``."""

    def __init__(
        self,
        embed_dim: int,
        dim: int,
        dropout: float = 0.0,
        init: str = "zero",
        act_layer: type = nn.ReLU,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"adapter_dim must be > 0, got {dim}")
        if init not in ADAPTER_INITS:
            raise ValueError(f"adapter_init must be one of {ADAPTER_INITS}, got {init!r}")
        self.init = init
        self.down_proj = nn.Linear(embed_dim, dim, device=device, dtype=dtype)
        self.act = act_layer()
        self.dropout = nn.Dropout(dropout)
        self.up_proj = nn.Linear(dim, embed_dim, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.down_proj.weight, std=0.02)
        nn.init.zeros_(self.down_proj.bias)
        if self.init == "zero":
            nn.init.zeros_(self.up_proj.weight)
        else:
            nn.init.normal_(self.up_proj.weight, std=0.02)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up_proj(self.dropout(self.act(self.down_proj(x))))

    def extra_repr(self) -> str:
        return f"init={self.init}"


class LinearThenAdapter(nn.Module):
    """``adapter(base_layer(x))``: an adapter right after a projection, for layers without an
    identity slot (Hugging Face encoders: after the attention output and the FFN output
    projections, before dropout and the residual add, as Houlsby et al. place them)."""

    def __init__(self, base_layer: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    @property
    def weight(self) -> torch.Tensor:  # callers that read a projection's weight (dtype, device)
        return self.base_layer.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer(x))
