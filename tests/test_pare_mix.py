"""PaRe's gate and patch replacement: vectorised = per-step reference, and the released semantics."""

import pytest
import torch

from ofa_ext.models.crossmodal.pare import (
    RELEASED_REPLACE,
    TokenGate,
    draw_noise,
    replace_deterministic,
    replace_deterministic_loop,
    replace_relaxed,
    replace_relaxed_loop,
)

D = 6


def _inputs(b=3, n=12, ns=9, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    gate = TokenGate(D, dtype=dtype)
    x_t = torch.randn(b, n, D, generator=g, dtype=dtype).requires_grad_(True)
    x_s = torch.randn(b, ns, D, generator=g, dtype=dtype).requires_grad_(True)
    return gate, x_t, x_s, g


def _grads(out, tensors, seed=1):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * w).sum(), tensors, allow_unused=True, retain_graph=True)


def test_gate_scores_source_and_target_with_one_linear():
    gate, x_t, x_s, _ = _inputs()
    s_t, s_s = gate(x_t), gate(x_s)
    assert s_t.shape == (3, 12) and s_s.shape == (3, 9)
    assert ((s_t > 0) & (s_t < 1)).all()
    manual = torch.sigmoid(x_s @ gate.proj.weight[0] + gate.proj.bias[0])
    torch.testing.assert_close(s_s, manual)
    assert sum(p.numel() for p in gate.parameters()) == D + 1


@pytest.mark.parametrize("replace", ["high", "low"])
def test_deterministic_vectorised_equals_loop(replace):
    gate, x_t, x_s, _ = _inputs()
    g_t, g_s = gate(x_t), gate(x_s)
    out = replace_deterministic(x_t, x_s, g_t, g_s, 5, replace)
    ref = replace_deterministic_loop(x_t, x_s, g_t, g_s, 5, replace)
    assert torch.equal(out, ref)
    params = [x_t, x_s, *gate.parameters()]
    for a, b in zip(_grads(out, params), _grads(ref, params)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    # no gradient reaches the gate in the deterministic phase
    assert all(g is None for g in _grads(out, list(gate.parameters())))


def test_deterministic_by_hand():
    x_t = torch.arange(4.0).view(1, 4, 1)
    x_s = torch.tensor([10.0, 11.0, 12.0]).view(1, 3, 1)
    g_t = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    g_s = torch.tensor([[0.2, 0.8, 0.7]])
    # high: best source (11) onto best target position (1), next (12) onto the next (2)
    assert replace_deterministic(x_t, x_s, g_t, g_s, 2, "high").flatten().tolist() == [0.0, 11.0, 12.0, 3.0]
    # low: best source onto the lowest-scored target position (0), next onto position 3
    assert replace_deterministic(x_t, x_s, g_t, g_s, 2, "low").flatten().tolist() == [11.0, 1.0, 2.0, 12.0]


@pytest.mark.parametrize("replace", ["low", "high"])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_relaxed_vectorised_equals_loop(replace, k):
    gate, x_t, x_s, gen = _inputs(seed=k)
    g_t, g_s = gate(x_t), gate(x_s)
    noise_t, noise_s = draw_noise(g_t, g_s, gen)
    out = replace_relaxed(x_t, x_s, g_t, g_s, noise_t, noise_s, k, 0.9, replace)
    ref = replace_relaxed_loop(x_t, x_s, g_t, g_s, noise_t, noise_s, k, 0.9, replace)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    params = [x_t, x_s, *gate.parameters()]
    grads, grads_ref = _grads(out, params), _grads(ref, params)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert grads[2].abs().sum() > 0  # the gate learns in the relaxed phase


@pytest.mark.parametrize("replace", ["low", "high"])
def test_relaxed_replaces_exactly_k_tokens_in_index_order(replace):
    gate, x_t, x_s, gen = _inputs(b=2, n=10, ns=8, seed=4)
    with torch.no_grad():
        g_t, g_s = gate(x_t), gate(x_s)
        noise_t, noise_s = draw_noise(g_t, g_s, gen)
        out = replace_relaxed(x_t, x_s, g_t, g_s, noise_t, noise_s, 3, 0.9, replace)
    for b in range(2):
        from_target = [i for i in range(10) if torch.allclose(out[b, i], x_t[b, i])]
        from_source = [j for i in range(10) for j in range(8) if torch.allclose(out[b, i], x_s[b, j])]
        assert len(from_target) == 7 and len(from_source) == 3
        assert from_source == sorted(from_source)  # source tokens keep their increasing index order
        replaced = sorted(set(range(10)) - set(from_target))
        # the overwritten positions are the lowest (low) / highest (high) of the perturbed target ranking
        # (exactly so when the relaxed top-k agrees with the plain ranking, as it does here)
        ranked = torch.argsort(g_t[b] + noise_t[b], descending=(replace == "high"))[:3].tolist()
        assert replaced == sorted(ranked)


def test_released_defaults_and_bad_input():
    assert RELEASED_REPLACE == {"relaxed": "low", "deterministic": "high"}
    gate, x_t, x_s, gen = _inputs(n=5, ns=4)
    g_t, g_s = gate(x_t), gate(x_s)
    with pytest.raises(ValueError, match=r"min\(target tokens 5, source tokens 4\), got k=5"):
        replace_deterministic(x_t, x_s, g_t, g_s, 5)
    with pytest.raises(ValueError, match="got k=0"):
        replace_deterministic(x_t, x_s, g_t, g_s, 0)
    with pytest.raises(ValueError, match="--pare-replace must be one of low, high"):
        replace_deterministic(x_t, x_s, g_t, g_s, 2, "middle")
    with pytest.raises(ValueError, match="target .B, N, d. and source .B, Ns, d. tokens"):
        replace_deterministic(x_t, x_s[..., :3], g_t, g_s, 2)
