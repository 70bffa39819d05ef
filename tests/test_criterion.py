"""OFA's label-smoothed cross entropy against a per-token loop written from the formula."""

import math
from types import SimpleNamespace

import pytest
import torch
from fairseq.data import Dictionary

from ofa_ext.criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy


def make_task(vocab: int = 20) -> SimpleNamespace:
    d = Dictionary()
    for i in range(vocab - d.nspecial):
        d.add_symbol(f"w{i}")
    return SimpleNamespace(target_dictionary=d)


def naive_loss(logits, target, eps, pad=1, allowed=None):
    total, total_nll, n = 0.0, 0.0, 0
    for b in range(target.size(0)):
        for t in range(target.size(1)):
            y = int(target[b, t])
            if y == pad:
                continue
            row = logits[b, t].double()
            ids = range(row.numel()) if allowed is None else [v for v in range(row.numel()) if allowed[v]]
            logz = math.log(sum(math.exp(float(row[v])) for v in ids))
            lp = {v: float(row[v]) - logz for v in ids}
            k = len(ids)
            eps_i = eps / (k - 1) if allowed is None else eps / (k - 1 + 1e-6)
            nll = -lp[y]
            total += (1 - eps - eps_i) * nll + eps_i * sum(-lp[v] for v in ids)
            total_nll += nll
            n += 1
    return total, total_nll, n


class FixedModel(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, **_):
        return self.logits, {}


@pytest.mark.parametrize("constraint", [None, "10,20"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_equals_formula(constraint, eps):
    torch.manual_seed(0)
    task = make_task()
    logits = torch.randn(3, 5, 20)
    target = torch.randint(10, 20, (3, 5))
    target[2, 3:] = 1  # padding
    crit = AdjustLabelSmoothedCrossEntropy(task, label_smoothing=eps, constraint_range=constraint)
    loss, sample_size, log = crit(FixedModel(logits), {"net_input": {}, "target": target})
    allowed = None
    if constraint:
        allowed = [v < 4 or 10 <= v < 20 for v in range(20)]
    ref, ref_nll, n = naive_loss(logits, target, eps, allowed=allowed)
    assert sample_size == n == 13
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    assert float(log["nll_loss"]) == pytest.approx(ref_nll, rel=1e-5)


def test_ignore_eos_and_prefix():
    task = make_task()
    logits = torch.randn(2, 4, 20)
    target = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 1]])
    crit = AdjustLabelSmoothedCrossEntropy(task, label_smoothing=0.1, ignore_eos=True, ignore_prefix_size=1)
    _, sample_size, log = crit(FixedModel(logits), {"net_input": {}, "target": target})
    assert sample_size == log["ntokens"] == 3  # [6, 7] and [9]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="--constraint-range"):
        AdjustLabelSmoothedCrossEntropy(make_task(), 0.1, constraint_range="5")
    with pytest.raises(ValueError, match="--label-smoothing"):
        AdjustLabelSmoothedCrossEntropy(make_task(), 1.5)
