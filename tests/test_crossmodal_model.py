"""Model `crossmodal_model` + task `crossmodal_finetune` + criterion `crossmodal_loss` without
fairseq-train: what trains under each PETL method, random-init switches, output shapes per target,
losses against torch's own, sums that reduce exactly, and the bad-input errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fairseq import metrics

from bodies_helpers import save_tiny
from ofa_ext.criterions.crossmodal_loss import CrossmodalLoss, per_sample_loss
from ofa_ext.data.arrays import ArrayFileError
from ofa_ext.models.crossmodal.model import CrossmodalModel, CrossmodalModelConfig
from ofa_ext.tasks.crossmodal_finetune import CrossmodalFinetuneConfig, CrossmodalFinetuneTask


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny("bert", str(tmp_path_factory.mktemp("bodies")))


def make_data(folder, x_shape=(2, 12), n=12, n_classes=3, y=None, splits=("train", "valid")):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        labels = rng.integers(0, n_classes, n) if y is None else y
        np.savez(folder / f"{split}.npz", x=rng.normal(size=(n,) + tuple(x_shape)).astype(np.float32), y=labels)
    return folder


def build(data, bert_dir, target="class", num_classes=3, **model_kw):
    task = CrossmodalFinetuneTask.setup_task(CrossmodalFinetuneConfig(data=str(data), target=target,
                                                                      num_classes=num_classes))
    torch.manual_seed(123)  # not the seed the tiny body was saved with: a fresh body must differ
    cfg = CrossmodalModelConfig(**{"body": f"hf:{bert_dir}", "target_seq_len": 6, **model_kw})
    return CrossmodalModel.build_model(cfg, task), task


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("flags, piece", [
    ({"lora": True, "lora_r": 2}, "lora_"),
    ({"adapter": True, "adapter_dim": 4}, "adapter"),
    ({"bitfit": True}, "bias"),
    ({"input_prompt_length": 3}, "input_prompt"),
])
def test_petl_trains_only_pieces_embedder_and_head(flags, piece, bert_dir, tmp_path):
    model, _ = build(make_data(tmp_path / "d"), bert_dir, **flags)
    names = trainable(model)
    outside = {n for n in names if not n.startswith(("embedder.", "head."))}
    assert outside and all(piece in n for n in outside), sorted(outside)
    assert {n for n, _ in model.embedder.named_parameters(prefix="embedder")} <= names
    assert {n for n, _ in model.head.named_parameters(prefix="head")} <= names
    assert not any(p.requires_grad for n, p in model.body.named_parameters()
                   if n.endswith("query.weight") and "lora_" not in n)
    out = model(torch.randn(4, 2, 12))
    out.sum().backward()  # every trainable parameter is on the forward path
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_full_finetuning_trains_everything_on_the_path(bert_dir, tmp_path):
    model, _ = build(make_data(tmp_path / "d"), bert_dir)
    native = {n for n, _ in model.named_parameters() if n.startswith("body.model.embeddings.")}
    assert native and trainable(model) == {n for n, _ in model.named_parameters()} - native
    model(torch.randn(4, 2, 12)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_random_init_switches(bert_dir, tmp_path):
    from ofa_ext.models.bodies.hf import load_hf_body

    data = make_data(tmp_path / "d")
    pretrained = load_hf_body(bert_dir).model.encoder.layer[0].attention.self.query.weight
    model, _ = build(data, bert_dir)
    assert torch.equal(model.body.model.encoder.layer[0].attention.self.query.weight, pretrained)
    scratch, _ = build(data, bert_dir, body_random_init=True)
    assert not torch.allclose(scratch.body.model.encoder.layer[0].attention.self.query.weight, pretrained)
    ln = scratch.body.model.embeddings.LayerNorm
    assert torch.equal(scratch.embedder.norm.weight, ln.weight)  # copied from the (fresh) body
    fresh, _ = build(data, bert_dir, embedder_random_init=True)
    assert torch.all(fresh.embedder.norm.weight == 1)
    assert not torch.equal(fresh.embedder.positions.embedding.weight,
                           fresh.body.model.embeddings.position_embeddings.weight)


def test_outputs_per_target_and_layout(bert_dir, tmp_path):
    model, _ = build(make_data(tmp_path / "c"), bert_dir, head_pooling="cls")
    assert model(torch.randn(5, 2, 12)).shape == (5, 3)
    reg, _ = build(make_data(tmp_path / "r", y=np.linspace(0, 1, 12)), bert_dir, target="regression")
    assert reg(torch.randn(5, 2, 12)).shape == (5,)
    dense_y = np.random.default_rng(1).normal(size=(12, 1, 12))
    dense, _ = build(make_data(tmp_path / "dense", y=dense_y), bert_dir, target="dense")
    assert dense(torch.randn(5, 2, 12)).shape == (5, 1, 12)
    multi_y = np.random.default_rng(1).integers(0, 2, (12, 4))
    multi, _ = build(make_data(tmp_path / "m", y=multi_y), bert_dir, target="multilabel", num_classes=4)
    assert multi(torch.randn(5, 2, 12)).shape == (5, 4)
    img, _ = build(make_data(tmp_path / "img", x_shape=(1, 8, 8)), bert_dir, patch_size=2)
    assert img.embedder.n_tokens == 16 and img(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    tab, _ = build(make_data(tmp_path / "tab", x_shape=(7,)), bert_dir, tabular_layout="features", target_seq_len=8)
    assert tab.embedder.n_tokens == 7 and tab(torch.randn(2, 7)).shape == (2, 3)


# -- criterion ---------------------------------------------------------------------------------------
def test_losses_against_torch():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    torch.testing.assert_close(per_sample_loss(logits, target, "ce").mean(), F.cross_entropy(logits, target))
    multi, labels = torch.randn(6, 4), torch.randint(0, 2, (6, 4)).float()
    expect = F.binary_cross_entropy_with_logits(multi, labels, pos_weight=torch.full((4,), 3.0))
    torch.testing.assert_close(per_sample_loss(multi, labels, "bce", pos_weight=3.0).mean(), expect)
    values, gold = torch.randn(6, 2, 5), torch.randn(6, 2, 5)
    torch.testing.assert_close(per_sample_loss(values, gold, "mse").mean(), F.mse_loss(values, gold))


class _Fixed(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out[x]


def reduced(criterion, model, samples):
    logs = [criterion(model, s)[2] for s in samples]
    with metrics.aggregate() as agg:
        CrossmodalLoss.reduce_metrics(logs)
    return agg.get_smoothed_values()


def test_weighted_ce_and_exact_reduction_over_shards():
    torch.manual_seed(0)
    logits, target = torch.randn(8, 3), torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    weights = torch.tensor([8 / (3 * 5), 8 / (3 * 2), 8 / (3 * 1)])
    task = SimpleNamespace(cfg=SimpleNamespace(target="class"), class_weights=weights)
    crit = CrossmodalLoss(task, loss="weighted_ce")
    model = _Fixed(logits)
    whole = {"net_input": {"x": torch.arange(8)}, "target": target}
    shards = [{"net_input": {"x": torch.arange(i, i + 4)}, "target": target[i:i + 4]} for i in (0, 4)]
    one, two = reduced(crit, model, [whole]), reduced(crit, model, shards)
    assert one["loss"] == pytest.approx(float(F.cross_entropy(logits, target, weight=weights)), abs=1e-6)
    assert one["loss"] == pytest.approx(two["loss"], abs=1e-6) and one["accuracy"] == two["accuracy"]
    assert one["accuracy"] == pytest.approx(100 * float((logits.argmax(-1) == target).float().mean()), abs=1e-3)


def test_loss_must_fit_the_target():
    with pytest.raises(ValueError, match="--loss mse needs --target regression, the task has --target class"):
        CrossmodalLoss(SimpleNamespace(cfg=SimpleNamespace(target="class")), loss="mse")


# -- bad input ----------------------------------------------------------------------------------------
def test_a_split_of_another_shape_is_named(bert_dir, tmp_path):
    data = make_data(tmp_path / "d")
    np.savez(data / "valid.npz", x=np.zeros((3, 2, 10), dtype=np.float32), y=np.zeros(3, dtype=np.int64))
    _, task = build(data, bert_dir)
    with pytest.raises(ArrayFileError, match=r"valid\.npz: samples of shape \(2, 10\), but train\.npz .* \(2, 12\)"):
        task.load_dataset("valid")


def test_bad_training_files_are_named(tmp_path):
    data = make_data(tmp_path / "d", y=np.array([0, 1, 2, 5] * 3))
    with pytest.raises(ArrayFileError, match=r"train\.npz: label 5 in row 3 is outside \[0, 3\) \(--num-classes 3\)"):
        CrossmodalFinetuneTask.setup_task(CrossmodalFinetuneConfig(data=str(data), num_classes=3))
    x = np.zeros((4, 1, 6), dtype=np.float32)
    x[1, 0, 2] = np.nan
    np.savez(data / "train.npz", x=x, y=np.zeros(4, dtype=np.int64))
    with pytest.raises(ArrayFileError, match=r"train\.npz: 'x' has 1 NaN/inf values \(first in row 1\)"):
        CrossmodalFinetuneTask.setup_task(CrossmodalFinetuneConfig(data=str(data), num_classes=3))
    np.savez(data / "train.npz", inputs=x)
    with pytest.raises(ArrayFileError, match=r"train\.npz: expected arrays 'x' and 'y'"):
        CrossmodalFinetuneTask.setup_task(CrossmodalFinetuneConfig(data=str(data), num_classes=3))
    with pytest.raises(ValueError, match="--num-classes 0: --target class needs at least 2"):
        CrossmodalFinetuneTask.setup_task(CrossmodalFinetuneConfig(data=str(make_data(tmp_path / "e"))))


def test_too_many_tokens_for_the_body(bert_dir, tmp_path):
    data = make_data(tmp_path / "d", x_shape=(1, 97))  # a prime length: stack_num 1 -> 97 tokens
    with pytest.raises(ValueError, match="lower --target-seq-len"):
        build(data, bert_dir, target_seq_len=100)
    with pytest.raises(ValueError, match=r"--body: body spec 'clip:x': expected"):
        build(data, bert_dir, body="clip:x")


def test_ofa_encoder_body_brings_its_own_positions(tmp_path):
    task = CrossmodalFinetuneTask.setup_task(CrossmodalFinetuneConfig(data=str(make_data(tmp_path / "d")),
                                                                      num_classes=3))
    torch.manual_seed(0)
    model = CrossmodalModel.build_model(CrossmodalModelConfig(body="ofa:ofa_nano#text", target_seq_len=6), task)
    ln = model.body.encoder.layernorm_embedding
    assert model.embedder.positions is None  # OFA adds position biases inside its layers
    assert torch.equal(model.embedder.norm.weight, ln.weight) and model.embedder.norm.eps == ln.eps
    assert model(torch.randn(3, 2, 12)).shape == (3, 3)


def test_piece_file_holds_pieces_embedder_and_head(bert_dir, tmp_path):
    from ofa_ext.models.petl import load_pieces, save_pieces

    data = make_data(tmp_path / "d")
    trained, _ = build(data, bert_dir, lora=True, lora_r=2)
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))  # stands in for training
    path = str(tmp_path / "pieces.safetensors")
    save_pieces(trained, path, arch="crossmodal_model", task="toy")
    fresh, _ = build(data, bert_dir, lora=True, lora_r=2)
    x = torch.randn(3, 2, 12)
    assert not torch.allclose(fresh.eval()(x), trained.eval()(x))
    load_pieces(fresh, path)
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)
