"""Learned key/value prefixes for every self-attention layer of one stack (P-Tuning v2 style).

One ``PromptEncoder`` per stack holds the prefixes of *all* its layers, laid out as π-Tuning /
OFA do (`specs/pi_tuning.md` §3.3): a table [P, n·2·C] (or an MLP over a [P, C] table) whose
columns for layer l are ``keys = [2l·C, (2l+1)·C)`` and ``values = [(2l+1)·C, (2l+2)·C)``, so
OFA's ``encoder.encoder_prompt_encoder.*`` keys keep their meaning.

Each attention module gets a light :class:`PrefixProvider` (a plain callable, not a Module, so
the shared parameters appear once in ``state_dict``) that computes only its layer's columns —
with the MLP this slices the last projection's rows instead of building all layers' prefixes.

An encoder can also mix K experts (π-Tuning step 3): its parameters then hold the experts
stacked [K, ...] and :meth:`PromptEncoder.mix_experts` supplies per-layer weights and per-expert
dropouts.
"""

from typing import Callable, Optional, Sequence, Tuple

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
        self.layer_weights: Optional[Callable[[int], torch.Tensor]] = None  # set by mix_experts
        self.expert_dropouts: Optional[nn.ModuleList] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, zero biases (OFA's re-init of new Linear/Embedding modules)."""
        nn.init.normal_(self.embedding.weight, std=0.02)
        if self.projection:
            for lin in (self.trans[0], self.trans[2]):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def layer_table(self, layer: int, expert: Optional[int] = None) -> torch.Tensor:
        """[P, 2C]: the key and value columns of ``layer`` (of expert ``expert`` in a mix, whose
        tensors are stacked [K, ...])."""
        C = self.num_heads * self.head_dim
        cols = slice(2 * layer * C, (2 * layer + 2) * C)

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t if expert is None else t[expert]

        if self.projection:
            first, last = self.trans[0], self.trans[2]
            hidden = self.trans[1](F.linear(pick(self.embedding.weight), pick(first.weight), pick(first.bias)))  # [P, d_p]
            return F.linear(hidden, pick(last.weight)[cols], pick(last.bias)[cols])  # only this layer's rows
        return pick(self.embedding.weight)[:, cols]

    def _expand(self, kv: torch.Tensor, bsz: int, dropout: nn.Module) -> torch.Tensor:
        """[P, 2C] -> [2, bsz, H, P, d], dropped per sample as π-Tuning (after expanding over the batch)."""
        kv = kv.view(1, self.length, 2, self.num_heads, self.head_dim).expand(bsz, -1, -1, -1, -1)
        return dropout(kv).permute(2, 0, 3, 1, 4)

    def layer_kv(self, layer: int, bsz: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of ``layer``, each [bsz, H, P, d].

        In a mix of K experts (:meth:`mix_experts`): ``Σ_k w_k · dropout_k(kv_k)`` with the weights
        of this layer's row, as π-Tuning's ``--prompt-num`` (mixing after each expert's dropout)."""
        if self.expert_dropouts is None:
            kv = self._expand(self.layer_table(layer), bsz, self.dropout)
        else:
            w = self.layer_weights(layer).to(self.embedding.weight.dtype)  # [K]
            kv = sum(w[k] * self._expand(self.layer_table(layer, k), bsz, d) for k, d in enumerate(self.expert_dropouts))
        return kv[0], kv[1]

    def mix_experts(self, layer_weights: Optional[Callable[[int], torch.Tensor]], rates: Sequence[float] = ()) -> None:
        """Mix K experts whose tensors the caller stacks into this encoder's parameters ([K, ...]):
        ``layer_weights(l)`` gives layer l's K weights, ``rates`` each expert's dropout. ``None``:
        back to a single encoder."""
        self.layer_weights = layer_weights
        self.expert_dropouts = None if layer_weights is None else nn.ModuleList(nn.Dropout(p) for p in rates)

    def mixed_table(self) -> torch.Tensor:
        """[P, n·2C]: every layer's mixed columns, the table of an equivalent plain encoder at
        inference (no projection: the MLP of each expert is evaluated)."""
        with torch.no_grad():
            if self.expert_dropouts is None:
                return torch.cat([self.layer_table(l) for l in range(self.num_layers)], 1)
            cols = []
            for l in range(self.num_layers):
                w = self.layer_weights(l).to(self.embedding.weight.dtype)
                cols.append(sum(w[k] * self.layer_table(l, k) for k in range(len(self.expert_dropouts))))
            return torch.cat(cols, 1)

    def use_table(self, table: torch.Tensor) -> None:
        """Become a plain encoder (no projection) holding ``table`` [P, n·2C] (after a mix)."""
        if self.projection:
            del self.trans
            self.projection = False
        self.embedding = nn.Embedding(self.length, table.shape[1], device=table.device, dtype=table.dtype)
        self.embedding.weight = nn.Parameter(table.detach().clone())

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
