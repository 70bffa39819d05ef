"""Position-bias helpers shared by the encoder and the decoder.

OFA turns learned absolute position embeddings into an additive attention bias
(q_pos · k_pos, specs/ofa.md §4.5, §5.2) and adds per-layer relative-position tables indexed by
bucket buffers (§4.6). These functions hold that maths once.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def abs_position_bias(q_linear: nn.Linear, k_linear: nn.Linear, q_pos: Tensor, k_pos: Tensor,
                      num_heads: int, scaling: float) -> Tensor:
    """(q_linear(q_pos)·scaling) @ k_linear(k_pos)ᵀ per head: [B, Tq, C], [B, Tk, C] → [B, H, Tq, Tk]."""
    bsz, tq, _ = q_pos.shape
    tk = k_pos.size(1)
    q = q_linear(q_pos).view(bsz, tq, num_heads, -1).transpose(1, 2) * scaling  # [B, H, Tq, d]
    k = k_linear(k_pos).view(bsz, tk, num_heads, -1).transpose(1, 2)  # [B, H, Tk, d]
    return torch.matmul(q, k.transpose(2, 3))


def token_rel_bias(table: nn.Embedding, rp_bucket: Tensor, length: int) -> Tensor:
    """Text relative bias for a length-L block: [H, L, L]."""
    values = F.embedding(rp_bucket[:length, :length], table.weight)  # [L, L, H]
    return values.permute(2, 0, 1)


def image_rel_bias(table: nn.Embedding, rp_bucket: Tensor, position_ids: Tensor) -> Tensor:
    """Image relative bias for patches with ids [B, N]: [B, H, N, N]."""
    buckets = rp_bucket[position_ids[:, :, None], position_ids[:, None, :]]  # [B, N, N]
    return F.embedding(buckets, table.weight).permute(0, 3, 1, 2)
