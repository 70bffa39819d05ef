"""Transferability estimators and prompt projectors, each against a direct computation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ofa_ext.metrics.transferability import (
    combined_score, ffn_activation_pattern, prompt_similarity, stimulation_similarity,
    task_gap_scores, train_universal_projector)
from ofa_ext.models.crossmodal.prompt_transfer import AttentionProjector, TransferredPrompt, xavier_prompt
from ofa_ext.models.petl.input_prompt import InputPrompt, xavier_bound


def _prompts(seed=0, s=(10, 8), t=(7, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*s, generator=g), torch.randn(*t, generator=g)


def test_prompt_similarity_variants():
    s, t = _prompts()
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    assert prompt_similarity(s, t) == pytest.approx(cos(s.mean(0), t.mean(0)), abs=1e-6)
    assert prompt_similarity(s, t, "cosine_max") == pytest.approx(cos(s.max(0).values, t.max(0).values), abs=1e-6)
    pairs = [cos(a, b) for a in s for b in t]
    assert prompt_similarity(s, t, "cosine_individual") == pytest.approx(np.mean(pairs), abs=1e-6)
    assert prompt_similarity(s, t, "euclidean_average") == pytest.approx(-float((s.mean(0) - t.mean(0)).norm()), abs=1e-6)
    with pytest.raises(ValueError, match="widths differ"):
        prompt_similarity(s, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="expected one of"):
        prompt_similarity(s, t, "dot")


def test_stimulation_pattern_and_overlap():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4), nn.Linear(4, 5))
    x = torch.randn(1, 3, 4)
    pattern = ffn_activation_pattern(lambda: body(x), [body[0], body[3]], position=2)
    h1 = body[0](x)[0, 2]
    h2 = body[3](body[2](body[1](body[0](x))))[0, 2]
    expected = torch.cat([(torch.nn.functional.gelu(h1) > 0), (h2 > 0)]).float()
    torch.testing.assert_close(pattern, expected)
    a, b = torch.tensor([1., 1., 0., 1.]), torch.tensor([1., 0., 0., 1.])
    assert stimulation_similarity(a, b) == pytest.approx(2 / math.sqrt(3 * 2))


def test_universal_projector_training_and_scores():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(6, 8, generator=g)
    sources = torch.randn(4, 6, 8, generator=g) + torch.arange(4.0).view(4, 1, 1)
    # the same seed gives the same projector; training lowers the loss it minimises
    p1 = train_universal_projector(sources, target, steps=5, seed=3)
    p2 = train_universal_projector(sources, target, steps=5, seed=3)
    torch.testing.assert_close(p1.source[0].weight, p2.source[0].weight)
    p0 = train_universal_projector(sources, target, steps=0, seed=3)
    p50 = train_universal_projector(sources, target, steps=50, lr=1e-2, seed=3)
    loss = lambda p: float((p.source(sources).mean(1) - target.mean(0)).norm(dim=-1).mean())
    with torch.no_grad():
        assert loss(p50) < 0.5 * loss(p0)
    # the task-gap score is the per-seed similarity after projection, averaged over seeds
    scores = task_gap_scores(sources, target, steps=10, seeds=(42, 44))
    expected = np.zeros(4)
    for seed in (42, 44):
        p = train_universal_projector(sources, target, steps=10, seed=seed)
        with torch.no_grad():
            expected += [prompt_similarity(p.source(s), target) / 2 for s in sources]
    np.testing.assert_allclose(scores, expected, atol=1e-6)


@pytest.mark.parametrize("options", [dict(), dict(src_noise=0.2, src_mix=True), dict(project_target=True, out_dim=5)])
def test_folded_token_means_equal_token_level(options):
    g = torch.Generator().manual_seed(2)
    sources, target = torch.randn(5, 9, 8, generator=g), torch.randn(7, 8, generator=g)
    for metric in ("cosine_average", "euclidean_average"):
        fast = task_gap_scores(sources, target, steps=20, lr=1e-2, seeds=(1, 2), eval_metric=metric, **options)
        ref = task_gap_scores(sources, target, steps=20, lr=1e-2, seeds=(1, 2), eval_metric=metric,
                              token_level=True, **options)
        np.testing.assert_allclose(fast, ref, atol=1e-5)


def test_universal_projector_options():
    s, t = torch.randn(3, 4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="must equal the width"):
        train_universal_projector(s, t, out_dim=5)
    proj = train_universal_projector(s, t, out_dim=5, project_target=True, steps=2,
                                     loss_metric="cosine", reduction="max", src_noise=0.1, src_mix=True)
    assert proj.target[0].out_features == 5


def test_combined_score():
    s, m = [0.5, 0.2, 0.9], [0.1, 0.5, 2.0]
    np.testing.assert_allclose(combined_score(s, m, lambda_t=2, lambda_m=0.5), 2 * np.array(s) - 0.5 * np.array(m))
    np.testing.assert_allclose(combined_score(s, m, phi="log"), np.array(s) - np.log(m))
    np.testing.assert_allclose(combined_score(s, m, phi="sinh"), np.array(s) - np.sinh(m))
    with pytest.raises(ValueError, match="expected one of"):
        combined_score(s, m, phi="exp")


def test_xavier_prompt_rule():
    bound = math.sqrt(6 / (3 * 16 * 16 + 768))  # VPT's, ViT-B/16
    assert xavier_bound(3 * 16 * 16, 768) == pytest.approx(bound)
    p = xavier_prompt(100, 768, generator=torch.Generator().manual_seed(0))
    assert p.shape == (100, 768) and bound * 0.98 < float(p.abs().max()) <= bound
    q = InputPrompt(100, 768, init="xavier").prompt
    assert bound * 0.98 < float(q.abs().max()) <= bound
    with pytest.raises(ValueError, match="--input-prompt-init 'zeros'"):
        InputPrompt(4, 8, init="zeros")


def test_attention_projector_matches_formula():
    torch.manual_seed(0)
    src = torch.randn(10, 6)
    for scaled in (False, True):
        a = AttentionProjector(4, 6, 8, scaled=scaled)
        k, v = a.key(src), a.value(src)
        scores = a.queries @ k.T / (math.sqrt(8) if scaled else 1.0)
        torch.testing.assert_close(a(src), torch.softmax(scores, -1) @ v)


def test_transferred_prompt_modes():
    src = torch.randn(10, 8)
    frozen = TransferredPrompt(src, 8, "frozen")
    torch.testing.assert_close(frozen(), src)
    assert not list(frozen.parameters())
    proj = TransferredPrompt(src, 6, "projection")
    torch.testing.assert_close(proj(), proj.projector(src))
    attn = TransferredPrompt(src, 8, "attention", total_len=10, attn_src_len=4)
    out = attn()
    assert out.shape == (10, 8)
    torch.testing.assert_close(out[4:], attn.target)
    out.sum().backward()
    assert attn.attention.queries.grad is not None and attn.target.grad is not None


@pytest.mark.parametrize("kwargs,needle", [
    (dict(width=6, mode="frozen"), "use --pt-mode projection"),
    (dict(width=8, mode="attention", total_len=10, attn_src_len=11), "--pt-attn-src-len 11"),
    (dict(width=8, mode="copy"), "--pt-mode 'copy'"),
])
def test_transferred_prompt_bad_input(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        TransferredPrompt(torch.randn(10, 8), **kwargs)


def test_stimulation_pattern_on_a_hf_body(tmp_path):
    from bodies_helpers import save_tiny

    from ofa_ext.models.bodies.hf import load_hf_body
    from ofa_ext.models.crossmodal.prompt_transfer import stimulation_pattern

    body = load_hf_body(save_tiny("bert", str(tmp_path)))
    anchor = body.embed(torch.tensor([[5]])).embeds[0]  # (1, d)
    prompt = torch.randn(4, body.width, generator=torch.Generator().manual_seed(0))
    pattern = stimulation_pattern(body, prompt, anchor, layers=2)
    # direct computation: the intermediate (pre-GELU) activations of both layers at the anchor position
    embeds = torch.cat([prompt, anchor]).unsqueeze(0)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # HF layers return a tuple or a tensor
    h, expected = embeds, []
    with torch.no_grad():
        for layer in body.model.encoder.layer:
            expected.append((layer.intermediate.dense(first(layer.attention(h)))[0, 4] > 0).float())
            h = first(layer(h))
    torch.testing.assert_close(pattern, torch.cat(expected))
    with pytest.raises(ValueError, match="2 FFN layers, 3 requested"):
        stimulation_pattern(body, prompt, anchor, layers=3)
