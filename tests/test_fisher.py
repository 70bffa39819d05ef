"""Diagonal Fisher: closed forms on logistic regression, vectorised = loop, π-Tuning's estimator,
no side effects, 2-process (gloo) = 1 process, task-embedding files."""

import json
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ofa_ext.metrics.fisher import (
    FisherEstimate,
    fisher_diagonal,
    layout_difference,
    layout_signature,
    load_task_embedding,
    save_task_embedding,
)

# ------------------------------------------------------------------------------------ toy models


class LogReg(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(d, 1, bias=False)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


def logreg_ll(model, batch):
    """Per-sample Bernoulli log-likelihood log p(y|x)."""
    logit = model(batch["x"])
    y = batch["y"]
    return -nn.functional.binary_cross_entropy_with_logits(logit, y, reduction="none")


def logreg_sample(model, batch, generator):
    p = torch.sigmoid(model(batch["x"]))
    return {**batch, "y": torch.bernoulli(p, generator=generator)}


def logreg_data(n=64, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (torch.rand(n, generator=g) < 0.5).float()
    return x, y


class ToySeq2Seq(nn.Module):
    """Embedding → attention block with a small 'piece' (adapter) → BatchNorm → vocab logits."""

    def __init__(self, vocab=11, d=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.drop = nn.Dropout(0.1)
        self.norm = nn.LayerNorm(d)
        self.bn = nn.BatchNorm1d(d)
        self.adapter_down = nn.Linear(d, 3)
        self.adapter_up = nn.Linear(3, d)
        self.out = nn.Linear(d, vocab)

    def forward(self, src_tokens, prev_output_tokens):
        h = self.emb(torch.cat([src_tokens, prev_output_tokens], dim=1))  # [B, S+T, d]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)  # [B, S+T, S+T]
        h = self.norm(h + self.drop(att @ v))
        h = h + self.adapter_up(torch.relu(self.adapter_down(h)))
        h = self.bn(h.transpose(1, 2)).transpose(1, 2)  # BatchNorm over channels
        return self.out(h[:, -prev_output_tokens.shape[1]:])  # [B, T, vocab]


PIECES = ["adapter_down.weight", "adapter_down.bias", "adapter_up.weight", "adapter_up.bias"]


def toy_model(seed=0):
    torch.manual_seed(seed)
    m = ToySeq2Seq()
    with torch.no_grad():  # non-trivial BN statistics for eval mode
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 1.5)
    for n, p in m.named_parameters():
        p.requires_grad_(n in PIECES)
    return m


def toy_batches(n_batches=3, bsz=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        src = torch.randint(0, 11, (bsz, 5), generator=g)
        tgt = torch.randint(0, 11, (bsz, 3), generator=g)
        out.append({"net_input": {"src_tokens": src, "prev_output_tokens": tgt}, "target": tgt, "nsentences": bsz})
    return out


def seq_ll(model, batch):
    """Per-sample sequence log-likelihood (sum over target tokens)."""
    logits = model(**batch["net_input"])
    lp = torch.log_softmax(logits, dim=-1).gather(-1, batch["target"].unsqueeze(-1)).squeeze(-1)
    return lp.sum(-1)


def seq_loss(model, batch):
    """Summed training loss (label-smoothed CE, ε = 0.1), as π-Tuning differentiates."""
    logits = model(**batch["net_input"])
    lprobs = torch.log_softmax(logits, dim=-1)
    nll = -lprobs.gather(-1, batch["target"].unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.mean(-1)
    return (0.9 * nll + 0.1 * smooth).sum()


# ------------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("vectorized", [True, False])
def test_logreg_empirical_closed_form(vectorized):
    x, y = logreg_data()
    m = LogReg(3)
    batches = [{"x": x[i : i + 16], "y": y[i : i + 16]} for i in range(0, 64, 16)]
    est = fisher_diagonal(m, batches, logreg_ll, estimator="empirical", vectorized=vectorized)
    s = torch.sigmoid(m(x)).detach()
    expected = (((s - y)[:, None] * x) ** 2).mean(0)
    torch.testing.assert_close(est.fisher["lin.weight"][0], expected, rtol=1e-5, atol=1e-7)
    assert est.n_samples == 64 and est.n_batches == 4 and est.divisor == 64.0


def test_logreg_model_fisher_statistical():
    x, _ = logreg_data(n=8)
    m = LogReg(3)
    with torch.no_grad():
        m.lin.weight.copy_(torch.tensor([[0.8, -0.5, 0.3]]))
    reps = 1500  # each x drawn 1500 times → 12000 labels from the model
    big = {"x": x.repeat(reps, 1), "y": torch.zeros(8 * reps)}
    est = fisher_diagonal(m, [big], logreg_ll, estimator="model", sample_fn=logreg_sample,
                          generator=torch.Generator().manual_seed(0))
    s = torch.sigmoid(m(x)).detach()
    exact = ((s * (1 - s))[:, None] * x**2).mean(0)  # E_y[(σ−y)²] = σ(1−σ)
    torch.testing.assert_close(est.fisher["lin.weight"][0], exact, rtol=0.06, atol=0)
    assert est.n_samples == 8 * reps


def test_model_estimator_needs_sample_fn():
    m = LogReg(3)
    with pytest.raises(ValueError, match="sample_fn"):
        fisher_diagonal(m, [], logreg_ll, estimator="model")


# --------------------------------------------------------------------- vectorised = loop


def test_vectorized_equals_loop_on_seq2seq_with_batchnorm():
    m = toy_model()
    vec = fisher_diagonal(m, toy_batches(), seq_ll, estimator="empirical", vectorized=True)
    loop = fisher_diagonal(m, toy_batches(), seq_ll, estimator="empirical", vectorized=False)
    assert set(vec.fisher) == set(PIECES)
    for k in PIECES:
        assert vec.fisher[k].abs().sum() > 0
        torch.testing.assert_close(vec.fisher[k], loop.fisher[k], rtol=1e-5, atol=1e-9)


def test_vectorized_chunked_and_model_sampled_equal_loop():
    m = toy_model()

    def sample(model, batch, gen):
        probs = torch.softmax(model(**batch["net_input"]), dim=-1)  # [B, T, V]
        y = torch.multinomial(probs.flatten(0, 1), 1, generator=gen).view(batch["target"].shape)
        return {**batch, "target": y}

    a = fisher_diagonal(m, toy_batches(), seq_ll, estimator="model", sample_fn=sample, chunk_size=3,
                        generator=torch.Generator().manual_seed(5))
    b = fisher_diagonal(m, toy_batches(), seq_ll, estimator="model", sample_fn=sample, vectorized=False,
                        generator=torch.Generator().manual_seed(5))
    for k in PIECES:
        torch.testing.assert_close(a.fisher[k], b.fisher[k], rtol=1e-5, atol=1e-9)


def test_vectorized_refuses_batchnorm_train_mode():
    with pytest.raises(ValueError, match="BatchNorm"):
        fisher_diagonal(toy_model(), toy_batches(), seq_ll, estimator="empirical", mode="train")
    # the loop reference runs in train mode
    est = fisher_diagonal(toy_model(), toy_batches(1), seq_ll, estimator="empirical", mode="train", vectorized=False)
    assert all(torch.isfinite(v).all() for v in est.fisher.values())


# ------------------------------------------------------------------- π-Tuning's estimator


def test_pi_tuning_matches_manual_backward_and_has_no_side_effects():
    m = toy_model()
    m.train()
    m.adapter_up.train(False)  # a mixed mode that must come back unchanged
    before = {k: v.clone() for k, v in m.state_dict().items()}
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    batches = toy_batches(n_batches=3, bsz=4)
    est = fisher_diagonal(m, batches, seq_loss, param_names=["adapter_down.weight", "adapter_up.bias"])

    # independent computation: .backward() into .grad on a copy, eval mode, nominal batch 4
    ref = toy_model()
    ref.eval()
    acc = {k: 0.0 for k in est.fisher}
    for b in batches:
        ref.zero_grad()
        seq_loss(ref, b).backward()
        for k in acc:
            acc[k] = acc[k] + ref.get_parameter(k).grad ** 2
    for k in acc:
        torch.testing.assert_close(est.fisher[k], acc[k] / (3 * 4), rtol=1e-6, atol=0)
    assert set(est.fisher) == {"adapter_down.weight", "adapter_up.bias"}
    assert est.divisor == 12.0 and est.estimator == "pi_tuning"

    # no side effects: same tensors, no .grad, same flags and modes
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in m.parameters())
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert m.training and not m.adapter_up.training and m.adapter_down.training


def test_pi_tuning_nominal_batch_size_and_wrapper_prefix():
    m = toy_model()
    wrapped = nn.Sequential()
    wrapped.add_module("module", m)  # names now start with "module."

    def loss(model, batch):
        return seq_loss(model.module, batch)

    batches = toy_batches(n_batches=2, bsz=4)[:1] + toy_batches(n_batches=1, bsz=2, seed=3)
    est = fisher_diagonal(wrapped, batches, loss)
    assert set(est.fisher) == set(PIECES)  # "module." stripped
    assert est.divisor == 2 * 4  # largest batch = nominal
    est8 = fisher_diagonal(wrapped, batches, loss, batch_size=8)
    assert est8.divisor == 16
    torch.testing.assert_close(est8.fisher["adapter_up.bias"] * 2, est.fisher["adapter_up.bias"])


def test_zero_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="zero samples"):
        fisher_diagonal(toy_model(), [], seq_loss)
    with pytest.raises(ValueError, match="zero samples"):
        fisher_diagonal(toy_model(), iter([]), seq_ll, estimator="empirical")


def test_bad_selection_errors():
    with pytest.raises(KeyError, match="nope"):
        fisher_diagonal(toy_model(), toy_batches(1), seq_loss, param_names=["nope"])
    frozen = toy_model().requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        fisher_diagonal(frozen, toy_batches(1), seq_loss)
    with pytest.raises(ValueError, match="estimator"):
        fisher_diagonal(toy_model(), toy_batches(1), seq_loss, estimator="diag")


# ---------------------------------------------------------------------- 2 processes = 1


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = toy_model()
        data = toy_batches(n_batches=4, bsz=4)[rank::world]  # each rank half the batches
        res = {}
        for est_name, fn in (("pi_tuning", seq_loss), ("empirical", seq_ll)):
            est = fisher_diagonal(m, data, fn, estimator=est_name)
            res[est_name] = (est.fisher, est.n_samples, est.n_batches, est.divisor)
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process():
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_dist_worker, args=(2, os.path.join(d, "init"), d), nprocs=2, join=True)
        m = toy_model()
        for est_name, fn in (("pi_tuning", seq_loss), ("empirical", seq_ll)):
            single = fisher_diagonal(m, toy_batches(n_batches=4, bsz=4), fn, estimator=est_name)
            for rank in range(2):
                fisher, n_samples, n_batches, divisor = torch.load(os.path.join(d, f"rank{rank}.pt"))[est_name]
                assert (n_samples, n_batches, divisor) == (single.n_samples, single.n_batches, single.divisor)
                for k in PIECES:
                    torch.testing.assert_close(fisher[k], single.fisher[k], rtol=1e-5, atol=1e-10)


# ------------------------------------------------------------------------------- file format


def test_task_embedding_roundtrip(tmp_path):
    est = fisher_diagonal(toy_model(), toy_batches(2), seq_loss)
    assert isinstance(est, FisherEstimate)
    meta = {"task": "refcoco", "expert": "experts/refcoco.safetensors", **est.meta()}
    path = save_task_embedding(tmp_path / "emb" / "refcoco.safetensors", est.fisher, meta)
    tensors, got = load_task_embedding(path)
    assert set(tensors) == set(est.fisher)
    for k in tensors:
        assert tensors[k].dtype == torch.float32
        torch.testing.assert_close(tensors[k], est.fisher[k])
    assert got["task"] == "refcoco" and got["estimator"] == "pi_tuning" and got["n_samples"] == 8
    assert got["layout_signature"] == layout_signature(est.fisher)
    assert json.loads((tmp_path / "emb" / "refcoco.json").read_text())["expert"] == "experts/refcoco.safetensors"


def test_task_embedding_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_task_embedding(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an ofa_ext task embedding"):
        load_task_embedding(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="not a safetensors"):
        load_task_embedding(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="empty"):
        save_task_embedding(tmp_path / "e.safetensors", {})


def test_layout_difference():
    a = {"x": torch.zeros(2, 3), "y": torch.zeros(4)}
    assert layout_difference(a, {"x": torch.ones(2, 3), "y": torch.ones(4)}) is None
    msg = layout_difference(a, {"x": torch.zeros(3, 2), "z": torch.zeros(4)})
    assert "only in the first" in msg and "only in the second" in msg and "shapes differ" in msg
    assert layout_signature(a) != layout_signature({"x": torch.zeros(3, 2), "y": torch.zeros(4)})


# ------------------------------------------------------------------ fairseq-sample objectives


class TupleOut(nn.Module):
    """fairseq-style model: forward(**net_input) -> (logits, extra)."""

    def __init__(self):
        super().__init__()
        self.inner = toy_model()

    def forward(self, src_tokens, prev_output_tokens):
        return self.inner(src_tokens, prev_output_tokens), {"attn": None}


def test_seq2seq_objectives_exclude_pads_and_vectorize():
    from ofa_ext.metrics.fisher import criterion_objective, seq2seq_log_likelihood, teacher_forced_sampler

    m = TupleOut().eval()
    batches = toy_batches()
    PAD = 1
    for b in batches:
        b["target"][b["target"] == PAD] = 2
        b["target"][0, -1] = PAD  # exactly one padded position
    allowed = torch.ones(11, dtype=torch.bool)
    allowed[7:] = False
    allowed[PAD] = True
    ll = seq2seq_log_likelihood(PAD)
    b = batches[0]
    logits = m(**b["net_input"])[0]
    lp = torch.log_softmax(logits, -1).gather(-1, b["target"].unsqueeze(-1)).squeeze(-1)
    expected = torch.stack([lp[0, :-1].sum(), lp[1].sum(), lp[2].sum(), lp[3].sum()])
    torch.testing.assert_close(ll(m, b), expected)
    for fn, kw in ((ll, {}), (seq2seq_log_likelihood(PAD, allowed),
                              {"estimator": "model", "sample_fn": teacher_forced_sampler(PAD, allowed)})):
        kw = {"estimator": "empirical", **kw}
        vec = fisher_diagonal(m, batches, fn, generator=torch.Generator().manual_seed(0), **kw)
        loop = fisher_diagonal(m, batches, fn, vectorized=False, generator=torch.Generator().manual_seed(0), **kw)
        for k in vec.fisher:
            torch.testing.assert_close(vec.fisher[k], loop.fisher[k], rtol=1e-5, atol=1e-10)
    drawn = teacher_forced_sampler(PAD, allowed)(m, b, torch.Generator().manual_seed(1))["target"]
    assert drawn[0, -1] == PAD and bool((drawn[allowed[drawn].logical_not()]).numel() == 0)

    def crit(model, sample):
        return -ll(model, sample).sum(), 4, {}

    a = fisher_diagonal(m, batches, criterion_objective(crit))
    c = fisher_diagonal(m, batches, lambda model, s: -ll(model, s).sum())
    for k in a.fisher:
        assert torch.equal(a.fisher[k], c.fisher[k])
    assert set(a.fisher) == {f"inner.{p}" for p in PIECES}


def test_train_mode_pass_leaves_no_grads():
    m = toy_model().train()
    est = fisher_diagonal(m, toy_batches(2), seq_loss, mode="train")
    assert m.training and all(p.grad is None for p in m.parameters())
    assert est.mode == "train"
