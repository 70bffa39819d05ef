"""Behaviour of the backbone on the tiny `ofa_nano` arch: training step, incremental decoding,
fairseq's SequenceGenerator, save/load, and the generic extension hooks."""

import argparse

import pytest
import torch
from torch import nn

from ofa_ext.models.ofa.attention import MultiheadAttention
from ofa_ext.api import load_official_checkpoint


def _batch(vocab: int, bsz: int = 2, src_len: int = 7, tgt_len: int = 5, image: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (bsz, src_len), generator=g)
    src[1, -2:] = 1  # text padding in sample 1
    prev = torch.randint(4, vocab, (bsz, tgt_len), generator=g)
    prev[:, 0] = 0  # decoding starts from bos
    return dict(
        src_tokens=src,
        src_lengths=(src != 1).sum(1),
        prev_output_tokens=prev,
        patch_images=torch.randn(bsz, 3, image, image, generator=g),
        patch_masks=torch.tensor([True, False] + [True] * (bsz - 2)),
    )


@pytest.mark.parametrize("with_image", [False, True])
def test_forward_backward(ofa_nano, with_image):
    model, cfg, d = ofa_nano(dropout=0.1, encoder_drop_path_rate=0.1, decoder_drop_path_rate=0.1)
    model.train()
    x = _batch(len(d))
    if not with_image:
        x["patch_images"] = x["patch_masks"] = None
    logits, extra = model(**x)
    n_patches = (64 // 16) ** 2 if with_image else 0
    assert logits.shape == (2, 5, len(d))
    assert extra["attn"][0].shape == (2, 5, n_patches + 7)
    assert len(extra["inner_states"]) == cfg.decoder_layers + 1
    logits.log_softmax(-1).mean().neg().backward()
    trunk_grad = model.encoder.embed_images.conv1.weight.grad
    assert (trunk_grad is not None and trunk_grad.abs().sum() > 0) == with_image
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    assert model.decoder.layers[0].self_attn.c_attn.grad is not None


def test_masked_image_equals_no_image_for_text_positions(ofa_nano):
    """A sample whose image is masked attends only to its text: same output as text-only input."""
    model, _, d = ofa_nano()
    model.eval()
    x = _batch(len(d))
    x["patch_masks"] = torch.tensor([False, False])
    with torch.no_grad():
        with_masked, _ = model(**x)
        text_only, _ = model(**{**x, "patch_images": None, "patch_masks": None})
    torch.testing.assert_close(with_masked, text_only, atol=1e-5, rtol=0)


def _incremental_logits(model, enc, prev, order=None):
    """Decode step by step as fairseq's generator does (full prefix every step)."""
    state: dict = {}
    steps = []
    for t in range(1, prev.size(1) + 1):
        out, _ = model.decoder(prev[:, :t], encoder_out=enc, incremental_state=state)
        steps.append(out[:, -1])
        if order is not None and t == 2:
            model.decoder.reorder_incremental_state_scripting(state, order)
            enc = model.encoder.reorder_encoder_out(enc, order)
            prev = prev.index_select(0, order)
            steps = [s.index_select(0, order) for s in steps]
    return torch.stack(steps, dim=1)


def _with_prefix(model):
    """Install a fixed prefix on every decoder self-attention (the cache must never store it)."""
    g = torch.Generator().manual_seed(5)
    pk, pv = torch.randn(1, 4, 3, 16, generator=g), torch.randn(1, 4, 3, 16, generator=g)
    for layer in model.decoder.layers:
        layer.self_attn.prefix_provider = lambda b, pk=pk, pv=pv: (pk.expand(b, -1, -1, -1), pv.expand(b, -1, -1, -1))


@pytest.mark.parametrize("with_prefix", [False, True])
def test_incremental_equals_full(ofa_nano, with_prefix):
    model, _, d = ofa_nano()
    model.eval()
    x = _batch(len(d), bsz=3, tgt_len=6)
    x["prev_output_tokens"][2, 3:] = 1  # padding inside a target prefix
    if with_prefix:
        _with_prefix(model)
    with torch.no_grad():
        enc = model.encoder(x["src_tokens"], x["src_lengths"], x["patch_images"], x["patch_masks"])
        full, _ = model.decoder(x["prev_output_tokens"], encoder_out=enc)
        step = _incremental_logits(model, enc, x["prev_output_tokens"])
    keep = x["prev_output_tokens"] != 1  # padded target rows are compared where the token is real
    torch.testing.assert_close(step[keep], full[keep], atol=1e-5, rtol=0)


def test_incremental_beam_reorder(ofa_nano):
    """Beams of one sentence (same source, as fairseq's generator lays them out) reordered mid-way."""
    model, _, d = ofa_nano()
    model.eval()
    _with_prefix(model)
    x = _batch(len(d), bsz=3, tgt_len=6)
    for k in ("src_tokens", "patch_images", "patch_masks", "src_lengths"):
        x[k] = x[k][:1].expand(3, *x[k].shape[1:]).contiguous()
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        enc = model.encoder(x["src_tokens"], x["src_lengths"], x["patch_images"], x["patch_masks"])
        reordered = _incremental_logits(model, enc, x["prev_output_tokens"], order)
        full, _ = model.decoder(x["prev_output_tokens"].index_select(0, order), encoder_out=enc)
    torch.testing.assert_close(reordered, full, atol=1e-5, rtol=0)


def test_sequence_generator_greedy(ofa_nano):
    """fairseq's SequenceGenerator (bos=0, beam 1) equals greedy decoding by full forward passes."""
    from fairseq.sequence_generator import SequenceGenerator

    model, _, d = ofa_nano()
    model.eval()
    x = _batch(len(d))
    gen = SequenceGenerator([model], d, beam_size=1, max_len_a=0, max_len_b=4, min_len=4)
    net_input = {k: x[k] for k in ("src_tokens", "src_lengths", "patch_images", "patch_masks")}
    with torch.no_grad():
        hypos = gen.generate([model], {"net_input": net_input}, bos_token=0)
        tokens = torch.zeros(2, 1, dtype=torch.long)
        for _ in range(4):
            logits, _ = model(**net_input, prev_output_tokens=tokens)
            lp = logits[:, -1].float().log_softmax(-1)
            lp[:, [d.pad(), d.eos()]] = -float("inf")
            tokens = torch.cat([tokens, lp.argmax(-1, keepdim=True)], dim=1)
    for b in range(2):
        assert hypos[b][0]["tokens"].tolist() == tokens[b, 1:].tolist() + [d.eos()]


def test_save_load_round_trip(ofa_nano, tmp_path):
    model, cfg, d = ofa_nano(seed=3)
    model.eval()
    x = _batch(len(d))
    with torch.no_grad():
        ref, _ = model(**x)
    # 1) plain state dict into a differently seeded model (fairseq trainer path)
    other, _, _ = ofa_nano(seed=4)
    other.load_state_dict(model.state_dict(), strict=True, model_cfg=cfg)
    other.eval()
    with torch.no_grad():
        assert torch.equal(other(**x)[0], ref)
    # 2) a file in OFA's layout (cfg["model"] a Namespace), read by our loader
    ns = argparse.Namespace(**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if not k.startswith("_")})
    ns._name = ns.arch = "ofa_nano"
    path = tmp_path / "nano.pt"
    torch.save({"args": None, "cfg": {"model": ns}, "model": model.state_dict()}, path)
    loaded, cfg2 = load_official_checkpoint(str(path), dictionary=d)
    with torch.no_grad():
        assert torch.equal(loaded(**x)[0], ref)
    assert cfg2.encoder_embed_dim == cfg.encoder_embed_dim and cfg2._name == "ofa_nano"
    assert loaded.decoder.output_projection.weight is loaded.encoder.embed_tokens.weight


def test_layer_hooks_are_used(ofa_nano):
    model, _, d = ofa_nano()
    model.eval()
    x = _batch(len(d))
    layers = list(model.encoder.layers) + list(model.decoder.layers)
    assert all(isinstance(l.post_attn, nn.Identity) and isinstance(l.post_ffn, nn.Identity) for l in layers)
    with torch.no_grad():
        ref, _ = model(**x)
    for site in ("post_attn", "post_ffn"):
        for l in layers:
            setattr(l, site, _Zero())
        with torch.no_grad():
            out, _ = model(**x)
        assert not torch.allclose(out, ref)
        calls = sum(getattr(l, site).calls for l in layers)
        assert calls == len(layers)
        for l in layers:
            setattr(l, site, nn.Identity())


class _Zero(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 0


def test_prefix_provider_contract():
    """Prefix keys/values go before the real ones; bias/mask/padding cover real keys only."""
    torch.manual_seed(0)
    attn = MultiheadAttention(32, 4, self_attention=True, scale_heads=True).eval()
    T, B, P, H, hd = 5, 2, 3, 4, 8
    x = torch.randn(T, B, 32)
    bias = torch.randn(B * H, T, T)
    causal = torch.triu(torch.full((T, T), float("-inf")), 1)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, -1] = True
    pk, pv = torch.randn(B, H, P, hd), torch.randn(B, H, P, hd)
    attn.prefix_provider = lambda bsz: (pk[:bsz], pv[:bsz])
    with torch.no_grad():
        out, w = attn(x, x, x, key_padding_mask=pad, attn_mask=causal, attn_bias=bias)
        # independent computation
        q = attn.q_proj(x).view(T, B, H, hd).permute(1, 2, 0, 3) * (hd * 2) ** -0.5
        k = torch.cat([pk, attn.k_proj(x).view(T, B, H, hd).permute(1, 2, 0, 3)], 2)
        v = torch.cat([pv, attn.v_proj(x).view(T, B, H, hd).permute(1, 2, 0, 3)], 2)
        s = q @ k.transpose(2, 3)
        s[..., P:] += bias.view(B, H, T, T) + causal
        s[..., P:] = s[..., P:].masked_fill(pad[:, None, None, :], float("-inf"))
        p = s.softmax(-1)
        o = (p @ v) * attn.c_attn.view(1, H, 1, 1)
        expect = attn.out_proj(o.permute(2, 0, 1, 3).reshape(T, B, 32))
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=0)
    assert w.shape == (B, T, T)  # weights over the real keys only
    torch.testing.assert_close(w, p[..., P:].mean(1), atol=1e-6, rtol=0)


def test_linear_modules_called_as_modules(ofa_nano):
    """LoRA-style wrappers replace q/k/v/out_proj and fc1/fc2: the forward must go through them."""
    model, _, d = ofa_nano()
    model.eval()
    calls = []

    class Counting(nn.Linear):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    layer = model.decoder.layers[0]
    for owner, name in [(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj")] + [
        (layer, "fc1"), (layer, "fc2")
    ]:
        old = getattr(owner, name)
        new = Counting(old.in_features, old.out_features)
        new.load_state_dict(old.state_dict())
        setattr(owner, name, new)
    with torch.no_grad():
        model(**_batch(len(d)))
    assert len(calls) == 6
    assert "decoder.layers.0.fc1.weight" in model.state_dict()


def test_drop_path_is_per_sample():
    from ofa_ext.models.ofa.drop_path import drop_path

    torch.manual_seed(0)
    x = torch.ones(3, 64, 4)  # [T, B, C]
    y = drop_path(x, 0.5, training=True, batch_dim=1)
    per_sample = y[0, :, 0]
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (y == per_sample.view(1, 64, 1)).all()
    assert torch.equal(drop_path(x, 0.5, training=False, batch_dim=1), x)


def test_forward_has_no_data_dependent_branches(ofa_nano):
    """torch.func.vmap over single samples equals the batched forward (per-sample gradients need it)."""
    from torch.func import functional_call, vmap

    model, _, d = ofa_nano()
    model.eval()
    x = _batch(len(d))
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}

    def one(src, prev, img):
        out, _ = functional_call(model, state, (src[None], None, prev[None]), {"patch_images": img[None]})
        return out[0]

    with torch.no_grad():
        batched, _ = model(x["src_tokens"], None, x["prev_output_tokens"], patch_images=x["patch_images"])
        mapped = vmap(one)(x["src_tokens"], x["prev_output_tokens"], x["patch_images"])
    torch.testing.assert_close(mapped, batched, atol=1e-5, rtol=0)
