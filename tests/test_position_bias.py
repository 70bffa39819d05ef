"""The encoder's relative bias, gathered in one call, equals the bias assembled block by block.

Reference (independent): a zero [H, T, T] tensor with the image table's rows written into the image
block and the token table's rows into the text block, one element at a time from the bucket
indices. Values and both tables' gradients must agree exactly (the same sums in the same order).
"""

import pytest
import torch
from torch import nn

from ofa_ext.models.ofa.position_bias import encoder_rel_bias, encoder_rel_index, image_buckets
from ofa_ext.models.ofa.positions import (image_position_ids, make_image_bucket_position, make_token_bucket_position,
                                          num_image_relative_buckets)

H, BUCKET, TOKEN_BUCKET = 3, 4, 8


def _reference(image_table, token_table, buckets, text_buckets):
    n = 0 if buckets is None else buckets.size(0)
    length = text_buckets.size(0)
    out = torch.zeros(H, n + length, n + length)
    for i in range(n):
        for j in range(n):
            out[:, i, j] = image_table.weight[buckets[i, j]]
    for i in range(length):
        for j in range(length):
            out[:, n + i, n + j] = token_table.weight[text_buckets[i, j]]
    return out


@pytest.mark.parametrize("with_image,num_text", [(True, 5), (True, 0), (False, 6)])
def test_gathered_bias_equals_blockwise_reference(with_image, num_text):
    torch.manual_seed(0)
    image_table = nn.Embedding(num_image_relative_buckets(BUCKET), H)
    token_table = nn.Embedding(2 * TOKEN_BUCKET - 1, H)
    buckets = None
    if with_image:
        ids = image_position_ids(3, 2, BUCKET)
        buckets = image_buckets(make_image_bucket_position(BUCKET), ids)
    text_buckets = make_token_bucket_position(TOKEN_BUCKET, 16)[:num_text, :num_text]
    index = encoder_rel_index(buckets, text_buckets, image_table.num_embeddings, token_table.num_embeddings)
    got = encoder_rel_bias(image_table if with_image else None, token_table, index)
    want = _reference(image_table, token_table, buckets, text_buckets)
    assert got.shape == want.shape
    assert torch.equal(got, want)

    g = torch.randn_like(want)
    (got * g).sum().backward()
    grads = [image_table.weight.grad, token_table.weight.grad]
    image_table.zero_grad(), token_table.zero_grad()
    (_reference(image_table, token_table, buckets, text_buckets) * g).sum().backward()
    for mine, ref in zip(grads, [image_table.weight.grad, token_table.weight.grad]):
        if ref is None:
            assert mine is None or not mine.any()
        else:
            torch.testing.assert_close(mine, ref, rtol=0, atol=1e-6)
