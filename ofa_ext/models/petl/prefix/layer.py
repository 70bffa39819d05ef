"""Learned key/value prefixes for every self-attention layer of one stack (P-Tuning v2 style).

One ``PromptEncoder`` per stack holds the prefixes of *all* its layers, laid out as π-Tuning /
OFA do (`specs/pi_tuning.md` §3.3): a table [P, n·2·C] (or an MLP over a [P, C] table) whose
columns for layer l are ``keys = [2l·C, (2l+1)·C)`` and ``values = [(2l+1)·C, (2l+2)·C)``, so
OFA's ``encoder.encoder_prompt_encoder.*`` keys keep their meaning.

Each attention module gets a light :class:`PrefixProvider` (a plain callable, not a Module, so
the shared parameters appear once in ``state_dict``) that computes only its layer's columns —
with the MLP this slices the last projection's rows instead of building all layers' prefixes.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class PromptEncoder(nn.Module):
    """Prefix keys/values for ``num_layers`` attention layers of ``num_heads`` × ``head_dim``."""

    def __init__(
        self,
        length: int,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        projection: bool = False,
        hidden_dim: int = 512,
        dropout: float = 0.0,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if length < 0:
            raise ValueError(f"prompt length must be >= 0, got {length}")
        self.length, self.num_layers = length, num_layers
        self.num_heads, self.head_dim = num_heads, head_dim
        embed_dim = num_heads * head_dim
        out_dim = num_layers * 2 * embed_dim
        self.projection = projection
        if projection:
            self.embedding = nn.Embedding(length, embed_dim, device=device, dtype=dtype)
            # indices 0 and 2 as OFA's `trans` Sequential, so its keys `trans.0.*`, `trans.2.*` match
            self.trans = nn.Sequential(
                nn.Linear(embed_dim, hidden_dim, device=device, dtype=dtype),
                nn.ReLU(),
                nn.Linear(hidden_dim, out_dim, device=device, dtype=dtype),
            )
        else:
            self.embedding = nn.Embedding(length, out_dim, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, zero biases (OFA's re-init of new Linear/Embedding modules)."""
        nn.init.normal_(self.embedding.weight, std=0.02)
        if self.projection:
            for lin in (self.trans[0], self.trans[2]):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def layer_kv(self, layer: int, bsz: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of ``layer``, each [bsz, H, P, d]."""
        C = self.num_heads * self.head_dim
        cols = slice(2 * layer * C, (2 * layer + 2) * C)
        if self.projection:
            hidden = self.trans[1](self.trans[0](self.embedding.weight))  # [P, d_p]
            last = self.trans[2]
            kv = F.linear(hidden, last.weight[cols], last.bias[cols])  # [P, 2C]
        else:
            kv = self.embedding.weight[:, cols]  # [P, 2C]
        kv = kv.view(1, self.length, 2, self.num_heads, self.head_dim).expand(bsz, -1, -1, -1, -1)
        kv = self.dropout(kv)  # per-sample mask, as π-Tuning drops after expanding over the batch
        kv = kv.permute(2, 0, 3, 1, 4)  # [2, bsz, H, P, d]
        return kv[0], kv[1]

    def forward(self, bsz: int) -> torch.Tensor:
        """All layers at once: [num_layers, 2, bsz, H, P, d] (for inspection and tests)."""
        return torch.stack([torch.stack(self.layer_kv(l, bsz)) for l in range(self.num_layers)])

    def extra_repr(self) -> str:
        return f"length={self.length}, layers={self.num_layers}, heads={self.num_heads}, head_dim={self.head_dim}"


class PrefixProvider:
    """``provider(bsz) -> (k, v)`` for one layer; the attention module's ``prefix_provider``."""

    def __init__(self, encoder: PromptEncoder, layer: int) -> None:
        self.encoder, self.layer = encoder, layer

    def __call__(self, bsz: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.layer_kv(self.layer, bsz)

    def __repr__(self) -> str:
        return f"PrefixProvider(layer={self.layer}, length={self.encoder.length})"
