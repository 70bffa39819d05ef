"""ORCA's embedders and heads: token counts of `specs/orca.md` §3.2, what is copied from the body,
and loops over tokens as the reference for the vectorised forward passes."""

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel, ViTConfig, ViTModel

from ofa_ext.data.tabular import onehot_layout
from ofa_ext.models.crossmodal import (
    DenseHead1D, Embedder1D, Embedder2D, PooledHead, TabularEmbedder, find_init_parts, pool_tokens, stack_num,
)

TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def tiny_bert(**kw):
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, max_position_embeddings=64, **TINY, **kw))


@pytest.mark.parametrize("shape, target_seq_len, stack, tokens", [
    ((1, 1000), 64, 20, 50),    # ECG
    ((1, 46), 512, 1, 46),      # Satellite
    ((4, 1000), 512, 2, 500),   # DeepSEA
    ((1, 150), 64, 3, 50),      # GunPoint with MiniLM (offline_assets.md §3)
    ((6, 100), 512, 1, 100),    # BasicMotions
])
def test_orca_token_counts(shape, target_seq_len, stack, tokens):
    assert stack_num(shape[1], target_seq_len) == stack
    emb = Embedder1D(shape[0], shape[1], 8, target_seq_len, position_table=520)
    out, mask = emb(torch.randn(2, *shape))
    assert out.shape == (2, tokens, 8) and mask is None and emb.stack_num == stack


def test_stack_num_is_the_smallest_fitting_divisor():
    for length in range(1, 300):
        for target in (1, 7, 64, 512):
            divisors = [s for s in range(1, length + 1) if length % s == 0]
            assert stack_num(length, target) == min(s for s in divisors if length / s <= target)


def test_2d_token_counts():
    assert Embedder2D(3, (32, 32), 8, patch=4, resize=224).n_tokens == 3136  # ORCA's CIFAR path: 56 x 56
    emb = Embedder2D(1, (8, 8), 8, patch=3)  # digits, padded to 9 x 9
    out, _ = emb(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 9, 8) and emb.grid == (3, 3)
    assert Embedder2D(1, (8, 8), 8, patch=2)(torch.randn(1, 1, 8, 8))[0].shape == (1, 16, 8)


def test_1d_forward_equals_a_loop_over_tokens():
    torch.manual_seed(1)
    bert = tiny_bert()
    emb = Embedder1D(3, 12, 16, target_seq_len=4, position_table=64)
    assert emb.init_from(find_init_parts(bert)) == ["layernorm", "positions"]
    emb, bert = emb.double(), bert.double()  # the loop and the convolution sum in different orders
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    out, _ = emb(x)
    s, w, b = emb.stack_num, emb.projection.weight, emb.projection.bias  # w: (d, C, s)
    ln, pos = bert.embeddings.LayerNorm, bert.embeddings.position_embeddings.weight
    for t in range(emb.n_tokens):
        chunk = x[:, :, t * s:(t + 1) * s]  # (B, C, s)
        token = torch.einsum("bcs,dcs->bd", chunk, w) + b
        expect = torch.nn.functional.layer_norm(token, (16,), ln.weight, ln.bias, ln.eps) + pos[t]  # BERT: ids from 0
        torch.testing.assert_close(out[:, t], expect, atol=1e-10, rtol=1e-10)


def test_1d_init_copies_layernorm_and_positions_and_keeps_xavier_conv():
    bert = tiny_bert()
    with torch.no_grad():
        bert.embeddings.LayerNorm.weight.uniform_(0.5, 1.5)
    emb = Embedder1D(2, 10, 16, target_seq_len=10, position_table=64)
    emb.init_from(find_init_parts(bert))
    assert torch.equal(emb.norm.weight, bert.embeddings.LayerNorm.weight)
    assert torch.equal(emb.norm.bias, bert.embeddings.LayerNorm.bias)
    assert torch.equal(emb.positions.embedding.weight, bert.embeddings.position_embeddings.weight)
    assert emb.positions.embedding.weight.data_ptr() != bert.embeddings.position_embeddings.weight.data_ptr()
    k = emb.stack_num
    bound = math.sqrt(2.0) * math.sqrt(6.0 / (2 * k + 16 * k))  # xavier_uniform, gain sqrt(2)
    assert emb.projection.weight.abs().max() <= bound and torch.all(emb.projection.bias == 0)
    emb.reset_parameters(random=True)
    assert torch.all(emb.norm.weight == 1) and torch.all(emb.norm.bias == 0)
    assert emb.projection.weight.std() < 0.03
    assert not torch.equal(emb.positions.embedding.weight, bert.embeddings.position_embeddings.weight)


def test_roberta_positions_start_after_padding_idx():
    torch.manual_seed(0)
    roberta = RobertaModel(RobertaConfig(vocab_size=50, max_position_embeddings=40, pad_token_id=1, **TINY))
    parts = find_init_parts(roberta)
    assert parts.position_offset == 2  # ORCA's ids 2, 3, ... (padding_idx + 1)
    emb = Embedder1D(1, 6, 16, position_table=40, position_offset=parts.position_offset)
    emb.init_from(parts)
    assert emb.positions.ids.tolist() == [2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="lower --target-seq-len"):
        Embedder1D(1, 60, 16, target_seq_len=60, position_table=40, position_offset=2)


def test_2d_init_tiles_the_patch_kernel_over_channels():
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=8, patch_size=2, num_channels=3, **TINY))
    src = vit.embeddings.patch_embeddings.projection
    emb = Embedder2D(5, (8, 8), 16, patch=2)
    assert emb.init_from(find_init_parts(vit)) == ["patch_conv"]  # ViT has no embedding LayerNorm
    w = emb.projection.weight
    assert torch.equal(w[:, :3], src.weight) and torch.equal(w[:, 3:], src.weight[:, :2])
    assert torch.equal(emb.projection.bias, src.bias)
    assert Embedder2D(5, (8, 8), 16, patch=4).init_from(find_init_parts(vit)) == []  # kernel sizes differ


def test_2d_resize_and_positions_option():
    emb = Embedder2D(1, (8, 8), 16, patch=4, resize=16, positions=True, position_table=64)
    emb.init_from(find_init_parts(tiny_bert()))
    out, _ = emb(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 16, 16)


def test_tabular_layouts():
    rows = torch.randn(4, 7)
    assert TabularEmbedder((7,), 16, "channels")(rows)[0].shape == (4, 1, 16)  # numeric-only: one token
    assert TabularEmbedder((7,), 16, "features")(rows)[0].shape == (4, 7, 16)  # a token per feature
    onehot = torch.randn(4, 3, 7)
    emb = TabularEmbedder((3, 7), 16, "features")
    assert emb.inner.in_channels == 3 and emb(onehot)[0].shape == (4, 7, 16)
    with pytest.raises(ValueError, match="--tabular-layout"):
        TabularEmbedder((7,), 16, "rows")


def test_onehot_layout_matches_orca():
    table = np.array([[0.5, 2.0, 10.0], [-1.0, 0.0, 30.0], [2.0, 2.0, 10.0]])
    out = onehot_layout(table, categorical=[1, 2])  # column 1: values {0, 2}; column 2: {10, 30}
    assert out.shape == (3, 2, 3)  # (N, W, F): W = widest one-hot = 2
    np.testing.assert_array_equal(out[:, :, 0], [[0.5, 0], [-1.0, 0], [2.0, 0]])  # numeric: slot 0
    np.testing.assert_array_equal(out[:, :, 1], [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(out[:, :, 2], [[1, 0], [0, 1], [1, 0]])


@pytest.mark.parametrize("bad", [torch.randn(2, 4, 12), torch.randn(2, 3, 10), torch.randn(3, 12)])
def test_input_not_fitting_the_1d_embedder(bad):
    with pytest.raises(ValueError, match=r"1-D embedder built for inputs \(B, 3 channels, length 12\)"):
        Embedder1D(3, 12, 8, position_table=64)(bad)


def test_input_not_fitting_the_2d_embedder():
    with pytest.raises(ValueError, match="2-D embedder built for inputs"):
        Embedder2D(1, (8, 8), 8, patch=2)(torch.randn(2, 3, 8, 8))


def test_pooling_and_heads_against_loops():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[False] * 5, [False, False, True, True, True], [False] * 4 + [True]])
    pooled = pool_tokens(hidden, mask, "mean")
    for b in range(3):
        torch.testing.assert_close(pooled[b], hidden[b][~mask[b]].mean(0))
    assert torch.equal(pool_tokens(hidden, mask, "cls"), hidden[:, 0])
    assert PooledHead(4, 1, squeeze=True)(hidden).shape == (3,)
    assert PooledHead(4, 6)(hidden, mask).shape == (3, 6)
    head = DenseHead1D(4, 2, 3)
    out, per_token = head(hidden), head.linear(hidden)
    assert out.shape == (3, 2, 15)
    for t in range(5):
        for c in range(2):
            for j in range(3):
                assert torch.equal(out[:, c, t * 3 + j], per_token[:, t, c * 3 + j])
    assert DenseHead1D(4, 2, 3, mode="pool")(hidden).shape == (3, 2, 15)
