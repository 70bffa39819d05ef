"""PaRe's curriculum k(epoch) and its losses: the spec's tables, exact arithmetic, one-line errors."""

import random
from fractions import Fraction
from math import floor

import pytest
import torch
import torch.nn.functional as F

from ofa_ext.criterions.pare_losses import (
    AUX_WEIGHTS,
    binarise_source_mask,
    pare_aux_weight,
    pare_loss,
    source_class_loss,
    source_mask_loss,
)
from ofa_ext.models.crossmodal.pare_schedule import PareSchedule

# specs/pare.md §5: (begin, end, epochs, N target tokens, k first, k last, λ first, λ last)
TABLE_2D = {
    "cifar100": (2000, 1500, 60, 3136, 2000, 525, 0.64, 0.17),
    "fsd50k": (2000, 1500, 100, 3136, 2000, 515, 0.64, 0.16),
    "darcy": (1000, 500, 100, 3136, 1000, 505, 0.32, 0.16),
    "cosmic": (500, 500, 60, 3136, 500, 8, 0.16, 0.003),
}
# (seq_num, epochs, N, k first, k last, λ first, λ last)
TABLE_1D = {"ecg": (32, 15, 50, 32, 2, 0.64, 0.04), "deepsea": (32, 25, 500, 32, 1, 0.064, 0.002)}


@pytest.mark.parametrize("task", sorted(TABLE_2D))
def test_spec_table_2d(task):
    begin, end, epochs, n, k0, k1, lam0, lam1 = TABLE_2D[task]
    sched = PareSchedule(begin, end, epochs)
    sched.validate(n, n)
    assert (sched.k(0), sched.k(epochs - 1)) == (k0, k1)
    assert round(sched.lam(0, n), 2) == lam0
    assert abs(sched.lam(epochs - 1, n) - lam1) < 0.005
    assert sched.ks() == sorted(sched.ks(), reverse=True)  # easy (source-heavy) to hard


@pytest.mark.parametrize("task", sorted(TABLE_1D))
def test_spec_table_1d(task):
    seq, epochs, n, k0, k1, lam0, lam1 = TABLE_1D[task]
    sched = PareSchedule.one_d(seq, epochs)
    sched.validate(n, 32)
    assert (sched.k(0), sched.k(epochs - 1)) == (k0, k1)
    assert round(sched.lam(0, n), 3) == lam0 and round(sched.lam(epochs - 1, n), 3) == lam1


def test_exact_floor_against_fractions():
    rng = random.Random(0)
    for _ in range(300):
        begin, end, epochs = rng.randint(1, 3000), rng.randint(0, 3000), rng.randint(1, 120)
        sched = PareSchedule(begin, end, epochs)
        ep = rng.randrange(epochs)
        assert sched.k(ep) == floor(Fraction(begin) - Fraction(end * ep, epochs))


def test_satellite_reaches_zero_error_and_clamp():
    sched = PareSchedule.one_d(32, 60)  # released Satellite: k = 0 in the last epoch
    with pytest.raises(ValueError, match=r"gives k = 0 at epoch 60; k must stay >= 1 .*--pare-clamp-k"):
        sched.validate(46, 32)
    with pytest.raises(ValueError, match=r"^--pare-seq-num 32 over 60 epochs gives k = 0"):
        sched.validate(46, 32, options="--pare-seq-num 32")
    clamped = PareSchedule.one_d(32, 60, clamp=True)
    clamped.validate(46, 32)
    assert clamped.k(59) == 1 and clamped.k(0) == 32


def test_k_larger_than_tokens_and_bad_epochs():
    with pytest.raises(ValueError, match=r"k = 32 at epoch 1, more than the 30 target / 32 source tokens"):
        PareSchedule.one_d(32, 15).validate(30, 32)
    with pytest.raises(ValueError, match=r"more than the 50 target / 16 source tokens per sample \(k must be <= 16\)"):
        PareSchedule.one_d(32, 15).validate(50, 16)
    with pytest.raises(ValueError, match="--pare-epochs must be >= 1"):
        PareSchedule(10, 5, 0).validate(50, 50)
    with pytest.raises(ValueError, match=r"covers epochs 1..15 \(--pare-epochs\), asked for epoch 16"):
        PareSchedule.one_d(32, 15).k(15)


def test_losses_by_task_type():
    assert AUX_WEIGHTS == {"2d-classification": 1.0, "2d-dense": 0.3, "1d": 0.1}
    t, m, s = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    lam = 0.25
    for kind, w in AUX_WEIGHTS.items():
        terms = pare_loss(t, m, s, lam, pare_aux_weight(kind))
        assert terms.total.item() == pytest.approx(2.0 + w * (0.75 * 3.0 + 0.25 * 5.0))
        assert (terms.target, terms.mix, terms.source) == (t, m, s)
    with pytest.raises(ValueError, match="--pare-task-type must be one of 2d-classification, 2d-dense, 1d"):
        pare_aux_weight("3d")
    with pytest.raises(ValueError, match=r"λ = k / N must lie in \[0, 1\]"):
        pare_loss(t, m, s, 1.5, 1.0)


def test_source_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 2])
    manual = -(torch.log_softmax(logits, -1)[0, 0] + torch.log_softmax(logits, -1)[1, 2])
    torch.testing.assert_close(source_class_loss(logits, labels), manual)
    with pytest.raises(ValueError, match=r"source labels must lie in \[0, 3\)"):
        source_class_loss(logits, torch.tensor([0, 3]))
    mask = torch.tensor([[0, 1, 7, 255]])
    assert binarise_source_mask(mask).tolist() == [[0.0, 1.0, 1.0, 0.0]]
    out = torch.tensor([[0.3, -2.0, 1.0, 4.0]])
    y = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    manual = -(y * F.logsigmoid(out) + (1 - y) * F.logsigmoid(-out)).sum()
    torch.testing.assert_close(source_mask_loss(out, mask), manual)
    with pytest.raises(ValueError, match=r"head output \(1, 4\) with the source mask \(1, 3\)"):
        source_mask_loss(out, mask[:, :3])
