"""PaRe's relaxed Gumbel top-k: the fast path equals the released loop on the same noise."""

import pytest
import torch

from ofa_ext.models.crossmodal.pare_topk import (
    gumbel_noise,
    relaxed_khot,
    relaxed_khot_loop,
    relaxed_topk_mask,
    straight_through_topk,
)


def _scores(b, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    gate = torch.rand(b, n, generator=g, dtype=dtype)  # gate scores live in (0, 1)
    return gate, gumbel_noise(gate, g)


def _value_and_grad(fn, s, k, tau, weight):
    s = s.clone().requires_grad_(True)
    out = fn(s, k, tau)
    (out * weight).sum().backward()
    return out.detach(), s.grad


@pytest.mark.parametrize("b,n,k,tau", [(3, 7, 1, 0.9), (2, 16, 5, 0.9), (4, 40, 39, 0.5), (1, 64, 32, 2.0)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_equals_loop_values_and_gradients(b, n, k, tau, dtype):
    gate, noise = _scores(b, n, dtype)
    weight = torch.randn(b, n, generator=torch.Generator().manual_seed(1), dtype=dtype)
    v_loop, g_loop = _value_and_grad(relaxed_khot_loop, gate + noise, k, tau, weight)
    v_fast, g_fast = _value_and_grad(relaxed_khot, gate + noise, k, tau, weight)
    assert torch.equal(v_fast, v_loop)  # the forward is the same arithmetic, bit for bit
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_fast, g_loop, **tol)


def test_fast_backward_against_finite_differences():
    gate, noise = _scores(2, 9, torch.float64, seed=3)
    s = (gate + noise).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: relaxed_khot(x, 4, 0.7), (s,), eps=1e-6, atol=1e-6)


def test_saturated_softmax_takes_the_clamp_path():
    # one score far above the rest: its first softmax is exactly 1.0, so log(max(1 - p, tiny)) clamps
    s = torch.tensor([[60.0, 0.3, 0.1, 0.2, 0.0]])
    assert torch.softmax(s / 0.9, -1)[0, 0] == 1.0
    weight = torch.tensor([[0.5, -1.0, 2.0, 0.3, 1.0]])
    v_loop, g_loop = _value_and_grad(relaxed_khot_loop, s, 3, 0.9, weight)
    v_fast, g_fast = _value_and_grad(relaxed_khot, s, 3, 0.9, weight)
    assert torch.equal(v_fast, v_loop)
    torch.testing.assert_close(g_fast, g_loop, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(g_fast).all()


def test_khot_mass_is_k_and_small_tau_is_exact_topk():
    gate, noise = _scores(4, 30, torch.float64, seed=5)
    for k in (1, 7, 30):
        torch.testing.assert_close(relaxed_khot(gate + noise, k, 0.9).sum(-1), torch.full((4,), float(k), dtype=torch.float64))
    # well separated scores and a cold temperature: the relaxation becomes the exact k-hot
    s = torch.randperm(12, generator=torch.Generator().manual_seed(0)).double().unsqueeze(0)
    khot = relaxed_khot(s, 4, 0.02)
    exact = torch.zeros_like(s).scatter_(1, s.topk(4).indices, 1.0)
    torch.testing.assert_close(khot, exact, atol=1e-9, rtol=0)


@pytest.mark.parametrize("impl", [relaxed_khot, relaxed_khot_loop])
def test_straight_through_mask(impl):
    gate, noise = _scores(3, 20, torch.float32, seed=7)
    gate.requires_grad_(True)
    mask = relaxed_topk_mask(gate, noise, 6, 0.9, khot_fn=impl)
    hard = (mask.detach() > 0.5).float()
    assert hard.sum(-1).tolist() == [6.0, 6.0, 6.0]
    torch.testing.assert_close(mask.detach(), hard, atol=1e-6, rtol=0)
    # the chosen set is the top-k of khot, as released
    khot = impl(gate.detach() + noise, 6, 0.9)
    assert torch.equal(hard, torch.zeros_like(khot).scatter_(1, khot.topk(6).indices, 1.0))
    # backward is khot's gradient
    w = torch.randn(3, 20)
    (grad_mask,) = torch.autograd.grad((mask * w).sum(), gate)
    g2 = gate.detach().clone().requires_grad_(True)
    (grad_khot,) = torch.autograd.grad((impl(g2 + noise, 6, 0.9) * w).sum(), g2)
    torch.testing.assert_close(grad_mask, grad_khot)


def test_straight_through_has_exactly_k_ones():
    khot = torch.tensor([[0.2, 3.0, 0.9, 0.9001]])
    st = straight_through_topk(khot, 2)
    assert (st > 0.5).nonzero()[:, 1].tolist() == [1, 3]


def test_half_precision_scores_are_computed_in_float32():
    gate, noise = _scores(2, 50, torch.float32, seed=2)
    mask = relaxed_topk_mask(gate.half(), noise.half(), 10, 0.9)
    assert mask.dtype == torch.float16 and torch.isfinite(mask).all()
    assert ((mask > 0.5).sum(-1) == 10).all()


def test_bad_k_and_noise_shape():
    gate, noise = _scores(2, 5, torch.float32)
    with pytest.raises(ValueError, match="0 <= k <= 5"):
        relaxed_khot(gate, 6, 0.9)
    with pytest.raises(ValueError, match="0 <= k <= 5"):
        relaxed_khot_loop(gate, -1, 0.9)
    with pytest.raises(ValueError, match="Gumbel noise of shape"):
        relaxed_topk_mask(gate, noise[:, :4], 2, 0.9)
    assert torch.equal(relaxed_khot(gate, 0, 0.9), torch.zeros_like(gate))


def test_gumbel_noise_is_gumbel():
    x = gumbel_noise(torch.empty(200_000), torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    assert abs(x.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni constant
    assert abs(x.std().item() - 1.2825) < 0.01  # pi / sqrt(6)
