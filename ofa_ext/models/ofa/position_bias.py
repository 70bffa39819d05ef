"""Position-bias helpers shared by the encoder and the decoder.

OFA turns learned absolute position embeddings into an additive attention bias
(q_pos · k_pos, specs/ofa.md §4.5, §5.2) and adds per-layer relative-position tables indexed by
bucket buffers (§4.6). These functions hold that maths once.

Positions and image ids are the same for every sample of a batch, so every function here works on
one sample and returns a bias with a leading batch dimension of 1 (or none): attention broadcasts it
over the batch instead of holding B copies.
"""

from typing import Optional

import torch
from torch import Tensor, nn


def abs_position_bias(q_linear: nn.Linear, k_linear: nn.Linear, q_pos: Tensor, k_pos: Tensor,
                      num_heads: int, scaling: float) -> Tensor:
    """(q_linear(q_pos)·scaling) @ k_linear(k_pos)ᵀ per head: [b, Tq, C], [b', Tk, C] → [max(b, b'), H, Tq, Tk]
    (b, b' ∈ {1, B}; pass one sample's positions to get a bias that broadcasts over the batch)."""
    q = q_linear(q_pos)
    q = q.view(q.size(0), q.size(1), num_heads, -1).transpose(1, 2) * scaling  # [b, H, Tq, d]
    k = k_linear(k_pos)
    k = k.view(k.size(0), k.size(1), num_heads, -1).transpose(1, 2)  # [b', H, Tk, d]
    return torch.matmul(q, k.transpose(2, 3))


def _rows(table: nn.Embedding, index: Tensor) -> Tensor:
    """table rows for an index of any shape → [*index.shape, H]. `index_select`, not F.embedding: the
    same values, but its backward is one index_add (F.embedding's is ~5x slower on the CPU for the
    331k-entry image index of a 384 px image)."""
    return table.weight.index_select(0, index.reshape(-1)).view(*index.shape, -1)


def token_rel_bias(table: nn.Embedding, rp_bucket: Tensor, length: int, rows: int = 0) -> Tensor:
    """Text relative bias for a length-L block: [H, L, L]; with `rows` = r > 0 only its last r
    query rows, [H, r, L] (incremental decoding needs the newest row only)."""
    start = length - rows if rows > 0 else 0
    return _rows(table, rp_bucket[start:length, :length]).permute(2, 0, 1)


def image_buckets(rp_bucket: Tensor, position_ids: Tensor) -> Tensor:
    """Bucket index [N, N] of patches with ids [N]; the same for every layer and every sample."""
    return rp_bucket[position_ids[:, None], position_ids[None, :]]


def encoder_rel_index(image_buckets: Optional[Tensor], text_buckets: Tensor, num_image_rows: int,
                      num_token_rows: int) -> Tensor:
    """One index [T, T] (T = N + L, image patches first) into the rows of
    ``cat(image table, token table, zero row)``: the image block reads the image table, the text
    block the token table, the cross blocks the zero row. Built once per forward; each layer then
    gathers its whole relative bias in one call (:func:`encoder_rel_bias`)."""
    if image_buckets is None:
        return text_buckets
    n, length = image_buckets.size(0), text_buckets.size(0)
    index = image_buckets.new_full((n + length, n + length), num_image_rows + num_token_rows)  # the zero row
    index[:n, :n] = image_buckets
    index[n:, n:] = text_buckets + num_image_rows
    return index


def encoder_rel_bias(image_table: Optional[nn.Embedding], token_table: nn.Embedding, index: Tensor) -> Tensor:
    """A layer's relative bias [H, T, T] from :func:`encoder_rel_index`: image and text terms in
    their diagonal blocks, zero across. One gather along the rows of the transposed tables (its
    backward is one index_add): assembling the bias from slices instead costs clones, zero fills
    and slice copies in the backward, ~4x the time (benchmarks/RESULTS.md)."""
    rows = token_table.weight
    if image_table is not None:
        rows = torch.cat([image_table.weight, rows, rows.new_zeros(1, rows.size(1))])
    return rows.t().index_select(1, index.reshape(-1)).view(-1, *index.shape)
