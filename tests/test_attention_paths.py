"""The attention's two implementations and its broadcast biases give the numbers of the reference path.

* explicit (the reference) vs fused (`scaled_dot_product_attention`): outputs and gradients, fp32
  atol 1e-5, with prefixes, head scales, padding, a causal mask and a bias that needs gradients;
* a bias for one sample broadcast over the batch equals the same bias expanded to [B·H, T, T];
* at model level: fused = explicit, and the shared token lookup (one lookup, sparse gradient into the
  tied output projection) = separate encoder / decoder lookups.
"""

import pytest
import torch

from ofa_ext.models.ofa.attention import MultiheadAttention, set_attention_implementation

T, S, B, H, HD, P = 6, 9, 3, 4, 8, 2
C = H * HD


def _attention(self_attention: bool, seed: int = 0) -> MultiheadAttention:
    torch.manual_seed(seed)
    attn = MultiheadAttention(C, H, self_attention=self_attention, encoder_decoder_attention=not self_attention,
                              scale_heads=True)
    with torch.no_grad():
        attn.c_attn.uniform_(0.5, 1.5)  # head scales that differ per head
    return attn


def _inputs(self_attention: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tk = T if self_attention else S
    x = torch.randn(T, B, C, generator=g, requires_grad=True)
    kv = x if self_attention else torch.randn(S, B, C, generator=g, requires_grad=True)
    bias = torch.randn(1, H, T, tk, generator=g).requires_grad_()  # one sample's bias, broadcast
    pad = torch.zeros(B, tk, dtype=torch.bool)
    pad[1, -2:] = True
    pad[2, 3] = True
    causal = torch.triu(torch.full((T, T), float("-inf")), 1) if self_attention else None
    pk = torch.randn(B, H, P, HD, generator=g, requires_grad=True)
    pv = torch.randn(B, H, P, HD, generator=g, requires_grad=True)
    return x, kv, bias, pad, causal, pk, pv


def _run(attn, inputs, implementation: str, prefix: bool):
    x, kv, bias, pad, causal, pk, pv = inputs
    attn.implementation = implementation
    attn.prefix_provider = (lambda bsz: (pk[:bsz], pv[:bsz])) if prefix else None
    out, _ = attn(x, kv, kv, key_padding_mask=pad, attn_mask=causal, attn_bias=bias, need_weights=False)
    leaves = [x, bias, attn.c_attn, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]
    leaves += [kv] if kv is not x else []
    leaves += [pk, pv] if prefix else []
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), leaves)
    return out.detach(), grads


@pytest.mark.parametrize("self_attention", [True, False])
@pytest.mark.parametrize("prefix", [False, True])
def test_fused_equals_explicit_outputs_and_gradients(self_attention, prefix):
    attn = _attention(self_attention).train()  # dropout 0: train mode must agree too
    inputs = _inputs(self_attention)
    ref_out, ref_grads = _run(attn, inputs, "explicit", prefix)
    out, grads = _run(attn, inputs, "fused", prefix)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=0)


def test_broadcast_bias_equals_expanded_per_sample_bias():
    """The [1, H, T, T] bias the encoder passes = OFA's [B·H, T, T] layout holding B copies."""
    attn = _attention(True).eval()
    x, _, bias, pad, causal, pk, pv = _inputs(True)
    attn.prefix_provider = lambda bsz: (pk[:bsz], pv[:bsz])
    expanded = bias.detach().expand(B, -1, -1, -1).reshape(B * H, T, T).clone().requires_grad_()
    out_b, w_b = attn(x, x, x, key_padding_mask=pad, attn_mask=causal, attn_bias=bias)
    out_e, w_e = attn(x, x, x, key_padding_mask=pad, attn_mask=causal, attn_bias=expanded)
    torch.testing.assert_close(out_b, out_e, atol=0, rtol=0)
    torch.testing.assert_close(w_b, w_e, atol=0, rtol=0)
    (g_b,) = torch.autograd.grad(out_b.sum(), bias)
    (g_e,) = torch.autograd.grad(out_e.sum(), expanded)
    torch.testing.assert_close(g_b, g_e.view(B, H, T, T).sum(0, keepdim=True), atol=1e-6, rtol=0)


def test_need_weights_always_uses_the_explicit_path():
    attn = _attention(False).eval()
    x, kv, bias, pad, _, _, _ = _inputs(False)
    attn.implementation = "fused"
    out, w = attn(x, kv, kv, key_padding_mask=pad, attn_bias=bias, need_weights=True)
    assert w.shape == (B, T, S)
    assert torch.all(w[1, :, -2:] == 0) and torch.allclose(w.sum(-1), torch.ones(B, T))


def test_unknown_implementation_is_one_clear_error(ofa_nano):
    model, _, _ = ofa_nano()
    with pytest.raises(ValueError, match=r"attention implementation 'flash'; expected one of \('auto', 'explicit', 'fused'\)"):
        set_attention_implementation(model, "flash")


def _nano_batch(vocab: int):
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, vocab, (2, 7), generator=g)
    src[1, -2:] = 1
    prev = torch.randint(4, vocab, (2, 5), generator=g)
    prev[:, 0] = 0
    prev[0, -1] = 1
    return dict(src_tokens=src, src_lengths=(src != 1).sum(1), prev_output_tokens=prev,
                patch_images=torch.randn(2, 3, 64, 64, generator=g), patch_masks=torch.tensor([True, False]))


def _loss_and_grads(model, x, separate_lookups: bool = False):
    model.zero_grad(set_to_none=True)
    if separate_lookups:  # encoder and decoder each look their tokens up (no shared lookup)
        enc = model.encoder(x["src_tokens"], patch_images=x["patch_images"], patch_masks=x["patch_masks"])
        logits, _ = model.decoder(x["prev_output_tokens"], encoder_out=enc)
    else:
        logits, _ = model(**x)
    logits.log_softmax(-1).mean().neg().backward()
    return logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_model_fused_equals_explicit(ofa_nano):
    model, _, d = ofa_nano()
    model.eval()
    x = _nano_batch(len(d))
    assert set_attention_implementation(model, "explicit") == 2 + 2 * 2  # encoder self + decoder self/cross
    ref_logits, ref_grads = _loss_and_grads(model, x)
    set_attention_implementation(model, "fused")
    logits, grads = _loss_and_grads(model, x)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-5, rtol=0, msg=k)


def test_shared_token_lookup_equals_separate_lookups(ofa_nano):
    model, _, d = ofa_nano()
    model.eval()
    x = _nano_batch(len(d))
    emb = model.encoder.embed_tokens.weight
    assert model.decoder.embed_tokens.weight is emb and model.decoder.output_projection.weight is emb
    logits, grads = _loss_and_grads(model, x)
    ref_logits, ref_grads = _loss_and_grads(model, x, separate_lookups=True)
    assert not emb.grad.is_sparse
    torch.testing.assert_close(logits, ref_logits, atol=0, rtol=0)
    for k in ref_grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-7, rtol=0, msg=k)


def test_features_only_leaves_a_dense_embedding_gradient(ofa_nano):
    """Without the output projection in the loss, the shared lookup's gradient is still dense."""
    model, _, d = ofa_nano()
    features, _ = model(**_nano_batch(len(d)), features_only=True)
    features.sum().backward()
    grad = model.encoder.embed_tokens.weight.grad
    assert grad is not None and not grad.is_sparse


def test_key_rows_equal_expanded_keys():
    """Cross-attention over distinct key rows + key_rows (beam search) = over the expanded keys."""
    attn = _attention(self_attention=False).eval()
    g = torch.Generator().manual_seed(5)
    rows = torch.tensor([0, 0, 1, 1, 1, 0])
    query = torch.randn(T, len(rows), C, generator=g)
    distinct = torch.randn(S, 2, C, generator=g)
    pad = torch.zeros(len(rows), S, dtype=torch.bool)
    pad[2:5, -3:] = True  # padding follows the source row
    bias = torch.randn(1, H, T, S, generator=g)
    with torch.no_grad():
        want, _ = attn(query, distinct[:, rows], distinct[:, rows], key_padding_mask=pad, attn_bias=bias,
                       need_weights=False)
        got, _ = attn(query, distinct, distinct, key_padding_mask=pad, attn_bias=bias, need_weights=False,
                      key_rows=rows)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
