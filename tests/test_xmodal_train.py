"""Real ``fairseq-train --task crossmodal_adaptation`` runs on cached features, checked against a plain
PyTorch loop over the same batches; and the task's bad inputs (one line each)."""

import sys

import pytest
import torch
import torch.nn.functional as F

from ofa_ext.data.features import FeatureCacheError, few_shot_rows, read_table
from ofa_ext.data.features_dataset import two_stream_batches
from ofa_ext.models.crossmodal.adaptation import zeroshot_weights
from ofa_ext.tasks.crossmodal_adaptation import CrossmodalAdaptationConfig, CrossmodalAdaptationTask
from tests.e2e_helpers import USER_DIR, run
from tests.xmodal_helpers import write_features

LR, WD, BATCH, UPDATES, PER_EPOCH = 1e-2, 1e-2, 8, 12, 4
# fairseq's Adam adds eps to sqrt(v) before the bias correction, torch's after: with saturated softmax
# rows (tiny gradients) the two differ by a whole step, so both runs use an eps that never matters
EPS = 1e-20


def _train(data, save, *extra):
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", USER_DIR, "--cpu",
           "--task", "crossmodal_adaptation", "--shots", "2", "--seed", "3", "--updates-per-epoch", str(PER_EPOCH),
           "--arch", "xmodal_head", "--criterion", "xmodal_ce", "--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--adam-eps", str(EPS),
           "--lr", str(LR), "--weight-decay", str(WD), "--lr-scheduler", "fixed", "--batch-size", str(BATCH),
           "--max-update", str(UPDATES), "--valid-subset", "valid,test", "--best-checkpoint-metric", "accuracy",
           "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints", "--save-dir", str(save),
           "--log-format", "json", "--log-interval", "1", "--num-workers", "0", *extra]
    return run(cmd, save.parent, timeout=300)


def _plain_loop(data, modality="cross_modal"):
    """The same training without fairseq: same rows, same batches, torch AdamW, mean cross-entropy."""
    text = read_table(data / "classes.safetensors")
    train = read_table(data / "train.image.safetensors")
    rows = few_shot_rows(train, 2, seed=3, path="train")
    feats, labels = torch.cat([text.features, train.features[rows]]), torch.cat([text.labels, train.labels[rows]])
    w = zeroshot_weights(text.features, text.labels, 3).clone().requires_grad_(True)
    opt = torch.optim.AdamW([w], lr=LR, weight_decay=WD, betas=(0.9, 0.999), eps=EPS)
    for epoch in range(1, UPDATES // PER_EPOCH + 1):
        for b in two_stream_batches(len(text), len(rows), BATCH // 2, BATCH - BATCH // 2, 3, epoch, PER_EPOCH):
            b = torch.as_tensor(b)
            loss = F.cross_entropy(100.0 * F.normalize(feats[b], dim=-1) @ w.T, labels[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w.detach()


def test_fairseq_run_equals_a_plain_loop_and_keeps_the_best(tmp_path):
    data = write_features(tmp_path / "feats")
    proc = _train(data, tmp_path / "ckpt")
    log = proc.stdout + proc.stderr
    assert "valid_accuracy_wiseft" in log and "valid_accuracy_zeroshot" in log and "test_accuracy" in log
    assert "train_loss_text" in log
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == UPDATES
    torch.testing.assert_close(state["model"]["linear.weight"], _plain_loop(data), rtol=1e-4, atol=1e-5)
    assert (tmp_path / "ckpt" / "checkpoint_best.pt").is_file()


def _task(data, **kw):
    cfg = CrossmodalAdaptationConfig(data=str(data), **kw)
    return CrossmodalAdaptationTask.setup_task(cfg)


def test_uni_modal_batches_hold_image_rows_only(tmp_path):
    data = write_features(tmp_path)
    task = _task(data, shots=2, modality="uni_modal", updates_per_epoch=3)
    task.load_dataset("train")
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=4).next_epoch_itr(shuffle=False)
    batches = list(itr)
    assert len(batches) == 3 and all(b["n_text"] == 0 and len(b["target"]) == 4 for b in batches)


def test_text_half_larger_than_the_text_table_stops(tmp_path):
    data = write_features(tmp_path, templates=2)  # 3 classes x 2 templates = 6 text rows
    task = _task(data, shots=4)
    task.load_dataset("train")
    with pytest.raises(ValueError, match=r"--batch-size 16: the text half \(8 rows\) must fit the text table \(6 rows\)"
                       r".*released code skips such sizes silently"):
        task.get_batch_iterator(task.dataset("train"), max_sentences=16)


def test_shots_beyond_a_class_and_features_of_another_body(tmp_path):
    data = write_features(tmp_path, per_class=(3, 4, 5))
    task = _task(data, shots=4)
    with pytest.raises(FeatureCacheError, match=r"--shots 4: class 'class0' has only 3 samples in .*train\.image"):
        task.load_dataset("train")
    with pytest.raises(FeatureCacheError, match=r"made by body 'test-body' layer 0, not body 'minilm' layer 0"):
        _task(data, shots=1, body="minilm")
    with pytest.raises(FeatureCacheError, match=r"made by body 'test-body' layer 0, not body 'test-body' layer 1"):
        _task(data, shots=1, body="test-body", layer=1)
    other = write_features(tmp_path / "other", body="another-body")
    (tmp_path / "valid.image.safetensors").write_bytes((other / "valid.image.safetensors").read_bytes())
    with pytest.raises(FeatureCacheError, match=r"valid\.image\.safetensors: made by body 'another-body' layer 0, but "
                       r"classes\.safetensors by 'test-body'"):
        task.load_dataset("valid")


def test_two_cpu_processes_share_batches_and_reduce_validation_exactly(tmp_path):
    """2 ranks: each update sums two batches (bsz 2 x 4), validation counts every row once over the
    ranks (6 = 3 classes x 2 shots), the best checkpoint is written from the all-reduced accuracy."""
    import json

    data = write_features(tmp_path / "feats")
    cmd = [sys.executable, "-m", "ofa_ext.cli.launch", "--nproc", "2", "--", str(data), "--user-dir", USER_DIR,
           "--task", "crossmodal_adaptation", "--shots", "2", "--seed", "3", "--updates-per-epoch", "4",
           "--arch", "xmodal_head", "--criterion", "xmodal_ce", "--optimizer", "adam", "--lr", "1e-2",
           "--lr-scheduler", "fixed", "--batch-size", "4", "--max-update", "8", "--valid-subset", "valid",
           "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints",
           "--save-dir", str(tmp_path / "ckpt"), "--log-format", "json", "--log-interval", "1", "--num-workers", "0"]
    proc = run(cmd, tmp_path, timeout=300)
    log = proc.stdout + proc.stderr
    valid = [json.loads(line[line.index("{"):]) for line in log.splitlines() if "valid_accuracy" in line]
    train = [json.loads(line[line.index("{"):]) for line in log.splitlines() if '"train_inner"' in line or
             ("train_inner" in line and "{" in line)]
    assert valid and all(v["valid_bsz"] == "6" for v in valid)
    assert train and all(t["bsz"] == "8" for t in train)
    assert (tmp_path / "ckpt" / "checkpoint_best.pt").is_file()
