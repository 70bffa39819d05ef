"""Task `pare` in-process: setup errors (one line each, before training), the source batch of the
target batch's size, and the parameters without a gradient on some steps handled explicitly."""

import pytest
import torch

from ofa_ext.criterions.pare_mix import PareMixCriterion
from ofa_ext.data.arrays_writer import write_array_dataset
from ofa_ext.data.source_features import save_source_features
from ofa_ext.models.crossmodal.model import CrossmodalModel, CrossmodalModelConfig
from ofa_ext.models.crossmodal.pare_model import PareModel
from ofa_ext.tasks.pare import PareConfig, PareTask


def _features(path, rows=48, tokens=12, width=384):
    xs = torch.randn(rows, tokens, width, generator=torch.Generator().manual_seed(0))
    save_source_features(path, xs, torch.zeros(rows, tokens, dtype=torch.bool), torch.arange(rows) % 3, {})
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pare_task")
    write_array_dataset("gunpoint", root / "gp", seed=1)
    src = _features(root / "src.safetensors")
    task = PareTask.setup_task(PareConfig(data=str(root / "gp"), pare_source_features=src, pare_seq_num=6,
                                          pare_epochs=2, pare_relaxed_epochs=1))
    torch.manual_seed(0)
    model = PareModel.build_model(CrossmodalModelConfig(body="minilm", target_seq_len=10, body_dropout=0.0), task)
    task.check_model(model)
    task.load_dataset("train")
    return root, task, model


def _task(root, **over):
    kw = dict(data=str(root / "gp"), pare_source_features=str(root / "src.safetensors"), pare_seq_num=6, pare_epochs=2)
    kw.update(over)
    return PareTask.setup_task(PareConfig(**kw))


def _step(task, model, epoch, b=4):
    task.get_batch_iterator(dataset=task.datasets["train"], max_sentences=b)
    task.begin_epoch(epoch, model)
    ds = task.datasets["train"]
    sample = task.with_source(ds.collater([ds[i] for i in range(b)]))
    model.zero_grad(set_to_none=True)
    loss, sample_size, log = PareMixCriterion(task, loss="ce")(model, sample)
    loss.backward()
    return sample, log


def test_source_batch_matches_the_target_batch(setup):
    _, task, model = setup
    sample, log = _step(task, model, 1, b=3)
    p = sample["pare"]
    assert p["tokens"].shape == (3, 12, 384) and p["labels"].shape == (3,)
    assert p["noise_t"].shape == (3, 10) and p["noise_s"].shape == (3, 12)
    assert (p["k"], p["phase"], p["replace"]) == (6, "relaxed", "low")
    assert log["pare_k"] == 6 * 3 and abs(log["pare_lam"] - 0.6 * 3) < 1e-12


def _without_grad(model):
    return {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}


def test_pare_leaves_no_parameter_without_a_gradient_in_either_phase(setup):
    _, task, model = setup
    ds = task.datasets["train"]
    model.zero_grad(set_to_none=True)
    loss, _, _ = PareMixCriterion(task, loss="ce")(model, ds.collater([ds[i] for i in range(4)]))  # plain path
    loss.backward()
    # evaluation's plain path leaves out only the gate and the source head: the body's own input
    # embedding, replaced by the embedder, is frozen (Body.use_external_inputs), so it is no trainable gap
    plain = {n for n in _without_grad(model) if not n.startswith(("gate.", "source_head."))}
    assert plain == set()
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".embeddings.word_embeddings" in n)
    for epoch, gate_learns in ((1, True), (2, False)):
        sample, _ = _step(task, model, epoch)
        assert sample["pare"]["phase"] == ("relaxed" if gate_learns else "deterministic")
        assert _without_grad(model) == plain, epoch  # gate and source head always in the graph
        gate_grad = torch.cat([p.grad.flatten() for p in model.gate.parameters()])
        assert (gate_grad.abs().sum() > 0) == gate_learns
        assert model.source_head.linear.weight.grad.abs().sum() > 0


def test_setup_errors(setup, tmp_path):
    root, task, model = setup
    with pytest.raises(ValueError, match=r"source tokens of width 16 .*has width 384$"):
        _task(root, pare_source_features=_features(tmp_path / "narrow.safetensors", width=16)).check_model(model)
    with pytest.raises(ValueError, match=r"^--pare-seq-num 32 over 2 epochs gives k = 32 at epoch 1, more than the "
                                         r"10 target / 12 source tokens per sample \(k must be <= 10\)$"):
        _task(root, pare_seq_num=32).check_model(model)
    with pytest.raises(ValueError, match=r"src\.safetensors: 48 source rows, fewer than one batch \(--batch-size 64\)$"):
        task.get_batch_iterator(dataset=task.datasets["train"], max_sentences=64)
    with pytest.raises(ValueError, match=r"needs --arch pare_model"):
        task.check_model(CrossmodalModel(model.embedder, model.body, model.head))
    with pytest.raises(ValueError, match=r"^PaRe needs a curriculum: --pare-seq-num N"):
        _task(root, pare_seq_num=0)
    with pytest.raises(ValueError, match=r"^--pare-seq-num 4 over 8 epochs gives k = 0 at epoch 8; k must stay >= 1"):
        _task(root, pare_seq_num=4, pare_epochs=8)  # in setup_task, before the body is even loaded
    with pytest.raises(ValueError, match=r"^--pare-epochs must be >= 1"):
        _task(root, pare_epochs=0)
    with pytest.raises(ValueError, match=r"^--pare-replace must be low or high"):
        _task(root, pare_replace="middle")
    with pytest.raises(ValueError, match=r"^--pare-task-type 2d-dense compares the mixed output with source masks"):
        _task(root, pare_task_type="2d-dense").check_model(model)
    with pytest.raises(ValueError, match=r"^--task pare needs --pare-source-features"):
        _task(root, pare_source_features="")
