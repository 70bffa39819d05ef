"""The distance library against independent computations (loops, POT's exact LP, hand values)."""

import itertools
import math
import warnings

import numpy as np
import ot
import pytest
import torch

from ofa_ext.metrics.distances import (bures_squared, entropic_ot, exact_ot, full_sq_cost,
                                       gaussian_stats, half_sq_cost, l2_pairing, mmd,
                                       sinkhorn_divergence)
from ofa_ext.metrics.kmeans import class_weights, pseudo_labels
from ofa_ext.metrics.otdd import OTDDSettings, otdd, otdd_uncached, prepare_source

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script inside geomloss


def _mmd_loop(x, y, kernel_mul=2.0, kernel_num=5, bandwidth=None):
    z = [r for r in x.double()] + [r for r in y.double()]
    n, total = x.shape[0], len(z)
    if bandwidth is None:
        s = sum(float(((z[i] - z[j]) ** 2).sum()) for i in range(total) for j in range(total))
        bandwidth = s / (total * total - total)
    base = bandwidth / kernel_mul ** (kernel_num // 2)

    def k(i, j):
        d = float(((z[i] - z[j]) ** 2).sum())
        return sum(math.exp(-d / (base * kernel_mul**q)) for q in range(kernel_num))

    xs, ys = range(n), range(n, total)
    mean = lambda a, b: sum(k(i, j) for i in a for j in b) / (len(a) * len(b))  # noqa: E731
    return mean(xs, xs) + mean(ys, ys) - mean(xs, ys) - mean(ys, xs)


@pytest.mark.parametrize("bandwidth", [None, 3.0])
def test_mmd_equals_a_brute_force_loop(bandwidth):
    torch.manual_seed(0)
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) + 0.5
    got = mmd(x, y, bandwidth=bandwidth)
    assert float(got) == pytest.approx(_mmd_loop(x, y, bandwidth=bandwidth), rel=1e-10)
    assert float(mmd(x, x)) == pytest.approx(0.0, abs=1e-12)


def test_mmd_is_differentiable_and_bandwidth_is_a_constant():
    torch.manual_seed(1)
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    mmd(x, y).backward()
    beta = float(torch.cdist(torch.cat([x, y.detach()]), torch.cat([x, y.detach()])).pow(2).sum()) / (144 - 12)
    y2 = y.detach().clone().requires_grad_(True)
    mmd(x, y2, bandwidth=beta).backward()  # fixed bandwidth = the estimate: same gradient
    torch.testing.assert_close(y.grad, y2.grad)


def test_l2_pairing_equals_a_loop_with_the_same_shuffle():
    torch.manual_seed(2)
    src, tgt = torch.randn(11, 3), torch.randn(4, 3)
    got = l2_pairing(src, tgt, torch.Generator().manual_seed(5))
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(5))
    batches = [perm[i:i + 4] for i in range(0, 11, 4)]
    want = np.mean([np.mean([float((tgt[j] - src[b[j]]).norm()) for j in range(len(b))]) for b in batches])
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_geomloss_entropic_ot_agrees_with_pots_converged_sinkhorn():
    torch.manual_seed(3)
    x, y = torch.randn(30, 5), torch.randn(20, 5) + 1
    for eps, rel in ((1.0, 1e-3), (0.1, 1e-2)):
        ours = float(entropic_ot(x, y, half_sq_cost, entreg=eps, scaling=0.9))
        pot = ot.solve(half_sq_cost(x.double(), y.double()), reg=eps, reg_type="KL",
                       method="sinkhorn_log", max_iter=100_000, tol=1e-12).value
        assert ours == pytest.approx(float(pot), rel=rel)


def test_sinkhorn_divergence_tends_to_pots_exact_emd2():
    torch.manual_seed(4)
    x, y = torch.randn(12, 2, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64) + 0.7
    exact = float(ot.emd2(ot.unif(12), ot.unif(9), ot.dist(x.numpy(), y.numpy())))
    assert float(exact_ot(x, y)) == pytest.approx(exact, rel=1e-9)
    s = float(sinkhorn_divergence(x, y, full_sq_cost, entreg=1e-4, scaling=0.95))
    assert s == pytest.approx(exact, rel=1e-2)


def test_bures_matches_pot_and_the_1d_closed_form():
    torch.manual_seed(5)
    a, b = torch.randn(40, 3, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64) * 2 + 1
    (ma, ca), (mb, cb) = gaussian_stats(a), gaussian_stats(b)
    pot = ot.gaussian.bures_wasserstein_distance(ma, mb, ca, cb) ** 2
    assert float(bures_squared(ma, ca, mb, cb)) == pytest.approx(float(pot), rel=1e-8)
    one = bures_squared(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[1.0]]))
    assert float(one) == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2)


# A 2-class toy case by hand. Source (1-D): class 0 = {0, 1}, class 1 = {4, 5}; target = {1, 2}.
# Exact inner W (cost |x-x'|², sorted matching): W(0,1) = 16, W(0,t) = 1, W(1,t) = 9.
# Outer cost ½|x-x'|² + W/2, source weights 1/4, target 1/2: the best split sends {0, 1} to 1 and
# {4, 5} to 2: (1 + 0.5 + 6.5 + 9) / 4 = 4.25 (the five other splits cost 20/4 … 25/4).
TOY_XS = torch.tensor([[0.0], [1.0], [4.0], [5.0]], dtype=torch.float64)
TOY_YS = torch.tensor([0, 0, 1, 1])
TOY_T = torch.tensor([[1.0], [2.0]], dtype=torch.float64)


def test_otdd_exact_equals_the_hand_computed_toy_value():
    src = prepare_source(TOY_XS, TOY_YS, OTDDSettings(inner="emd", outer="emd"))
    torch.testing.assert_close(src.label_dist, torch.tensor([[0.0, 16.0], [16.0, 0.0]], dtype=torch.float64))
    assert float(otdd(src, TOY_T)) == pytest.approx(4.25, abs=1e-9)


def test_otdd_sinkhorn_with_small_eps_approaches_the_toy_value():
    s = OTDDSettings(entreg=1e-3, scaling=0.95)
    assert float(otdd(prepare_source(TOY_XS, TOY_YS, s), TOY_T)) == pytest.approx(4.25, rel=2e-2)
    g = OTDDSettings(inner="gaussian", entreg=1e-3, scaling=0.95)
    # Bures of the toy classes: W(0,1) = 16, W(0,t) = 1, W(1,t) = 9 too (equal variances)
    src = prepare_source(TOY_XS, TOY_YS, g)
    torch.testing.assert_close(src.label_dist, torch.tensor([[0.0, 16.0], [16.0, 0.0]], dtype=torch.float64))
    assert float(otdd(src, TOY_T)) == pytest.approx(4.25, rel=2e-2)


def _blobs(seed=0, n=60, d=6, k=3):
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(n) % k
    xs = torch.randn(n, d, generator=g) + 3 * torch.nn.functional.one_hot(ys, d).float()
    return xs, ys


def test_otdd_cached_equals_recomputed_and_is_differentiable():
    xs, ys = _blobs()
    src = prepare_source(xs, ys)
    t = (torch.randn(20, 6) + 1).requires_grad_(True)
    cached = otdd(src, t)
    assert float(cached.detach()) == pytest.approx(float(otdd_uncached(xs, ys, t.detach())), rel=1e-6)
    cached.backward()
    assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # a target drawn from the source's own class 0 is closer than a shifted one
    assert float(otdd(src, xs[ys == 0])) < float(otdd(src, xs[ys == 0] + 3))


def test_gradient_steps_on_the_target_lower_otdd():
    """The gradient reaches the target through the outer feature cost and points downhill."""
    xs, ys = _blobs(n=30, d=3)
    src = prepare_source(xs, ys)
    t = (torch.randn(10, 3) + 4).requires_grad_(True)
    values = []
    for _ in range(5):
        d = otdd(src, t)
        values.append(float(d.detach()))
        (g,) = torch.autograd.grad(d, t)
        with torch.no_grad():
            t -= 2.0 * g
    assert values[-1] < values[0] * 0.8, values


@pytest.mark.parametrize("case,match", [
    ("nan", "NaN"), ("width", "features"), ("nolabels", "needs source labels"),
    ("single", "at least 2"), ("target_single", "at least 2"),
])
def test_otdd_bad_input_names_the_problem(case, match):
    xs, ys = _blobs(n=12, d=4)
    with pytest.raises(ValueError, match=match):
        if case == "nan":
            bad = xs.clone()
            bad[0, 0] = float("nan")
            prepare_source(bad, ys)
        elif case == "width":
            otdd(prepare_source(xs, ys), torch.randn(5, 3))
        elif case == "nolabels":
            prepare_source(xs, None)
        elif case == "single":
            prepare_source(xs, torch.cat([ys[:-1], torch.tensor([7])]))
        else:
            otdd(prepare_source(xs, ys), torch.randn(1, 4))


def _best_two_means_inertia(x):
    best = math.inf
    for mask in itertools.product([0, 1], repeat=x.shape[0] - 1):
        lab = np.array((0,) + mask)
        if lab.min() == lab.max():
            continue
        best = min(best, sum(((x[lab == c] - x[lab == c].mean(0)) ** 2).sum() for c in (0, 1)))
    return best


def test_pseudo_labels_reach_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 2))
    lab = pseudo_labels(x, k=2, seed=0)
    inertia = sum(((x[lab == c] - x[lab == c].mean(0)) ** 2).sum() for c in (0, 1))
    assert inertia == pytest.approx(_best_two_means_inertia(x), rel=1e-9)
    assert lab[0] == 0  # renumbered by first appearance


def test_pseudo_labels_for_regression_dense_and_multilabel_targets():
    rng = np.random.default_rng(1)
    reg = np.concatenate([rng.normal(0, 0.1, 20), rng.normal(5, 0.1, 20)])
    lab = pseudo_labels(reg, k=2)
    assert (lab[:20] == lab[0]).all() and (lab[20:] != lab[0]).all()
    dense = rng.normal(size=(30, 4, 4))
    assert pseudo_labels(dense, k=10, seed=3).max() == 9
    np.testing.assert_array_equal(pseudo_labels(dense, k=10, seed=3), pseudo_labels(dense, k=10, seed=3))
    multi = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0]] * 5)
    assert len(set(pseudo_labels(multi, k=10))) == 2  # k lowered to the distinct rows
    assert class_weights(np.array([0, 0, 1, 2])) == {0: 0.5, 1: 0.25, 2: 0.25}
    with pytest.raises(ValueError, match="NaN"):
        pseudo_labels(np.array([1.0, np.nan]), k=2)
