"""Unit tests of the pieces behind issue 10: true IoU, save-folder repair, atomic copies on a full
disk, one-line messages, log filters, piece-file labels and descriptions."""

import errno
import json
import logging
import random
import shutil

import pytest
import torch

from ofa_ext.metrics.boxes import grounding_hits, true_iou
from ofa_ext.utils import errors
from ofa_ext.utils.checkpoint_files import atomic_copy, checkpoint_updates, diagnose, repair_save_dir


def _iou_loop(p, g):
    """Reference: plain Python, one pair at a time."""
    iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    inter = iw * ih
    area = lambda b: max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])  # noqa: E731
    union = area(p) + area(g) - inter
    return inter / union if union > 0 else 0.0


def test_true_iou_matches_a_loop_and_stays_in_0_1():
    rng = random.Random(0)
    boxes = [[rng.uniform(0, 60) for _ in range(4)] for _ in range(400)]  # many reversed, many disjoint
    pred, gold = torch.tensor(boxes[:200], dtype=torch.float64), torch.tensor(boxes[200:], dtype=torch.float64)
    got = true_iou(pred, gold)
    want = torch.tensor([_iou_loop(p, g) for p, g in zip(boxes[:200], boxes[200:])], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12) and got.min() >= 0 and got.max() <= 1
    disjoint = true_iou(torch.tensor([[0., 0, 10, 10]]), torch.tensor([[20., 20, 30, 30]]))
    assert disjoint.item() == 0.0 and not str(disjoint.item()).startswith("-")
    # the hit decision keeps OFA's rule: a true overlap of 0.5 or more is a hit in both
    assert grounding_hits(torch.tensor([[0., 0, 10, 10]]), torch.tensor([[0., 0, 10, 12]])).item() == 1.0


def _ckpt(path, value: float):
    torch.save({"model": {"w": torch.full((64,), value)}}, path)
    return path


def test_repair_restores_truncated_last_from_its_source_and_removes_the_rest(tmp_path, caplog):
    src = _ckpt(tmp_path / "checkpoint_1_4.pt", 4.0)
    best = tmp_path / "checkpoint_best.pt"
    best.write_bytes(src.read_bytes()[:100])
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(src.read_bytes()[:300])
    (tmp_path / "checkpoint_last.pt.tmp").write_bytes(b"partial")
    (tmp_path / ".checkpoint_best.pt.abc123.tmp").write_bytes(b"partial")
    keep = tmp_path / "notes.tmp"
    keep.write_text("not ours")
    with caplog.at_level(logging.WARNING):
        actions = repair_save_dir(tmp_path)
    assert len(actions) == 4 and len(caplog.records) == 4
    assert diagnose(last) is None and torch.equal(torch.load(last)["model"]["w"], torch.full((64,), 4.0))
    assert not best.exists() and keep.exists() and not list(tmp_path.glob("*checkpoint*.tmp"))
    assert "checkpoint_best.pt: the file is truncated" in caplog.text


def test_truncated_last_without_a_source_is_an_error(tmp_path):
    (tmp_path / "checkpoint_last.pt").write_bytes(b"PK\x03\x04" + b"\0" * 50)
    with pytest.raises(ValueError, match="checkpoint_last.pt: the file is truncated.*no complete checkpoint"):
        repair_save_dir(tmp_path)


def test_checkpoint_updates_reads_the_last_optimizer_history_entry(tmp_path):
    state = {"model": {"w": torch.zeros(4)}, "optimizer_history": [{"num_updates": 4}, {"num_updates": 8}]}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"model": {}}, tmp_path / "no_history.pt")
    (tmp_path / "torn.pt").write_bytes((tmp_path / "zip.pt").read_bytes()[:200])
    assert checkpoint_updates(tmp_path / "zip.pt") == checkpoint_updates(tmp_path / "legacy.pt") == 8
    assert checkpoint_updates(tmp_path / "no_history.pt") is None
    assert checkpoint_updates(tmp_path / "torn.pt") is None and checkpoint_updates(tmp_path / "absent.pt") is None


def test_atomic_copy_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    old = _ckpt(tmp_path / "checkpoint_last.pt", 1.0)
    new = _ckpt(tmp_path / "checkpoint_1_2.pt", 2.0)
    before = old.read_bytes()

    def full_disk(src, dst):
        with open(dst, "wb") as f:
            f.write(b"PK\x03\x04half")
        raise OSError(errno.ENOSPC, "No space left on device", dst)

    monkeypatch.setattr(shutil, "copyfile", full_disk)
    with pytest.raises(OSError) as info:
        atomic_copy(new, old)
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [new.name, old.name]
    assert errors.is_input_error(info.value) and "No space left on device" in errors.one_line(info.value)


def test_ofa_train_removes_the_tmp_of_a_failed_first_write(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    from ofa_ext.cli.train import use_atomic_checkpoint_writes

    monkeypatch.setattr(checkpoint_utils, "PathManager", checkpoint_utils.PathManager)
    monkeypatch.setattr(checkpoint_utils, "torch_persistent_save", checkpoint_utils.torch_persistent_save)
    use_atomic_checkpoint_writes()
    def full_disk(obj, f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_utils, "_torch_persistent_save", full_disk)
    target = tmp_path / "checkpoint_1_2.pt"
    with pytest.raises(OSError):
        checkpoint_utils.torch_persistent_save({"x": 1}, str(target))
    assert not list(tmp_path.iterdir())
    assert checkpoint_utils.PathManager.copy(str(_ckpt(tmp_path / "a.pt", 1.0)), str(tmp_path / "b.pt"), True)
    assert diagnose(tmp_path / "b.pt") is None


def test_one_line_of_a_dataloader_worker_error_and_of_multi_line_reports():
    from ofa_ext.data.tsv import BadRowError

    wrapped = BadRowError("Caught BadRowError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                          "call last):\n  File \"x.py\", line 1\nofa_ext.data.tsv.BadRowError: a.tsv:3: bad box")
    assert errors.one_line(wrapped) == "a.tsv:3: bad box"
    assert errors.one_line(ValueError("first\nsecond\nthird")).startswith("first [+2 more line(s)")
    assert not errors.is_input_error(KeyError("x")) and errors.is_input_error(wrapped)


def test_debug_switch_keeps_the_traceback(monkeypatch, capsys):
    @errors.cli_entry("ofa-x")
    def main():
        raise ValueError("--flag: bad value")

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and capsys.readouterr().err == "ofa-x: error: --flag: bad value\n"
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="--flag"):
        main()


def test_shared_bias_log_lines_are_dropped_but_real_sharing_is_kept():
    from ofa_ext.utils.quiet_logs import _NoneBiasFilter

    def record(msg):
        return logging.LogRecord("fairseq.trainer", logging.INFO, "x", 1, msg, None, None)

    f = _NoneBiasFilter()
    assert not f.filter(record("detected shared parameter: encoder.layers.0.conv.bias <- decoder.fc.bias"))
    assert f.filter(record("detected shared parameter: encoder.embed_tokens.weight <- decoder.embed_tokens.weight"))
    assert f.filter(record("training on 1 devices"))
    installed = logging.getLogger("fairseq.trainer").filters  # by importing the plugin
    assert any(type(x).__name__ == "_NoneBiasFilter" for x in installed)
    assert logging.getLogger("matplotlib").level >= logging.WARNING


def test_piece_label_is_checked_and_info_shows_hyper_parameters(ofa_nano, tmp_path, capsys):
    from ofa_ext.cli import pieces
    from ofa_ext.models.petl import PETLConfig, apply_petl, save_pieces

    model, _, _ = ofa_nano()
    apply_petl(model, PETLConfig(adapter=True, adapter_dim=8, lora=True, lora_r=2))
    with pytest.raises(ValueError, match=r"arch='ofa_base'.*encoder_embed_dim 64 \(expected 768\)"):
        save_pieces(model, str(tmp_path / "x.safetensors"), arch="ofa_base")
    path = tmp_path / "nano.safetensors"
    save_pieces(model, str(path), arch="ofa_nano", task="t")
    capsys.readouterr()
    info = pieces.main(["info", str(path)])
    assert info == 0
    shown = json.loads(capsys.readouterr().out)["hyper_parameters"]
    assert shown["adapter_dim"] == 8 and shown["lora_r"] == 2 and "bitfit_scope" not in shown
    assert not any(k.startswith("encoder_prompt") for k in shown)


def test_blank_only_lines_are_empty(tmp_path):
    from ofa_ext.data.tsv import TSVReader

    p = tmp_path / "t.tsv"
    p.write_bytes(b"a\tb\n  \n\r\n\nc\td\n")
    r = TSVReader(p, use_cache=False)
    assert len(r) == 2 and r.num_bad_rows == 0 and r.line_number(1) == 5
