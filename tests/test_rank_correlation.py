"""Rank correlations: the prompt-transfer code's tie conventions, against loops and scipy."""

import itertools

import numpy as np
import pytest
from scipy import stats

from ofa_ext.metrics.rank_correlation import descending_first_index_ranks, kendall_tau_a, spearman_rho


def tau_a_loop(gt, pred):
    pairs = list(itertools.combinations(range(len(gt)), 2))
    return sum(np.sign(gt[i] - gt[j]) * np.sign(pred[i] - pred[j]) for i, j in pairs) / len(pairs)


def rho_loop(gt, pred):
    def ranks(v):
        ordered = sorted(v, reverse=True)
        return [ordered.index(x) for x in v]  # ties: the first index of their group
    d = np.subtract(ranks(gt), ranks(pred))
    n = len(gt)
    return 1 - 6 * float((d ** 2).sum()) / (n * (n * n - 1))


@pytest.mark.parametrize("seed", range(5))
def test_match_loops_with_ties(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 5, size=13).astype(float)  # many ties
    pred = rng.integers(0, 4, size=13).astype(float)
    assert kendall_tau_a(gt, pred) == pytest.approx(tau_a_loop(gt, pred), abs=1e-12)
    assert spearman_rho(gt, pred) == pytest.approx(rho_loop(gt, pred), abs=1e-12)


def test_without_ties_equal_scipy():
    rng = np.random.default_rng(0)
    gt, pred = rng.normal(size=19), rng.normal(size=19)
    assert kendall_tau_a(gt, pred) == pytest.approx(stats.kendalltau(gt, pred).statistic, abs=1e-12)
    assert spearman_rho(gt, pred) == pytest.approx(stats.spearmanr(gt, pred).statistic, abs=1e-12)


def test_ties_differ_from_scipy_tau_b():
    gt, pred = [1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]
    assert kendall_tau_a(gt, pred) == pytest.approx(5 / 6)  # the tied pair counts 0
    assert stats.kendalltau(gt, pred).statistic > 5 / 6


def test_ranks_descending_first_index():
    np.testing.assert_array_equal(descending_first_index_ranks([3, 1, 3, 2]), [0, 3, 0, 2])


@pytest.mark.parametrize("gt,pred,needle", [
    ([1, 2], [1, 2], "at least 3 sources"),
    ([1, 2, 3], [1, 2], "3 ground-truth values but 2"),
    ([1, 2, float("nan")], [1, 2, 3], "finite"),
])
def test_bad_input(gt, pred, needle):
    with pytest.raises(ValueError, match=needle):
        kendall_tau_a(gt, pred)
