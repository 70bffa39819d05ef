"""Real `fairseq-train --user-dir ofa_ext --task refcoco` runs on generated data, then evaluation.

Single process, resumption and `ofa-evaluate`'s JSON outputs (2 processes = 1 process:
test_two_process.py). The runs are a few updates long: they check wiring, not accuracy (the demo does that).
"""

import json
import subprocess
import sys

import pytest
import torch

from e2e_helpers import fairseq_train, make_tiny_grounding_data, run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_grounding_data(tmp_path_factory.mktemp("grounding"))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("ckpt")
    proc = fairseq_train(tiny_data, save, ["--max-update", "4", "--eval-acc", "--validate-interval-updates", "4",
                                           "--best-checkpoint-metric", "score", "--maximize-best-checkpoint-metric",
                                           "--tensorboard-logdir", str(save / "tb")], cwd=save)
    return save, proc.stdout + proc.stderr


def test_single_process_trains_validates_and_saves(trained):
    save, log = trained
    assert "num_updates 4" in log and "| score " in log, log[-3000:]
    assert (save / "checkpoint_best.pt").is_file() and (save / "checkpoint_last.pt").is_file()
    assert any((save / "tb").rglob("events.out.tfevents.*")), "no tensorboard events written"


def test_interrupted_run_resumes(trained, tiny_data, tmp_path):
    save, _ = trained
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 4
    proc = fairseq_train(tiny_data, save, ["--max-update", "6", "--disable-validation"], cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "4 updates" in log and "num_updates=6" in log.replace(" ", ""), log[-3000:]


def test_evaluate_writes_predictions_and_summary(trained, tiny_data, tmp_path):
    save, _ = trained
    out = tmp_path / "eval"
    proc = run([sys.executable, "-m", "ofa_ext.cli.evaluate", str(tiny_data), "--path", str(save / "checkpoint_best.pt"),
                "--gen-subset", "test", "--results-path", str(out), "--batch-size", "8", "--cpu"], cwd=tmp_path)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 16 and 0.0 <= summary["acc@0.5"] <= 1.0 and len(summary["checkpoint_sha256"]) == 64
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    for row in rows:
        assert {"id", "text", "pred_box", "gold_box", "iou"} <= set(row)
        assert len(row["pred_box"]) == 4 and len(row["gold_box"]) == 4
    assert sum(r["hit"] for r in rows) / 16 == pytest.approx(summary["acc@0.5"])


def test_evaluate_several_checkpoints_in_one_process(trained, tiny_data, tmp_path):
    """Two checkpoints in one call give each the predictions that a call of its own gives."""
    save, _ = trained
    paths = [str(save / "checkpoint_best.pt"), str(save / "checkpoint_last.pt")]
    common = [str(tiny_data), "--gen-subset", "test", "--batch-size", "8", "--cpu"]
    run([sys.executable, "-m", "ofa_ext.cli.evaluate", *common, "--path", *paths,
         "--results-path", str(tmp_path / "both_a"), str(tmp_path / "both_b")], cwd=tmp_path)
    for path, name in zip(paths, ("a", "b")):
        run([sys.executable, "-m", "ofa_ext.cli.evaluate", *common, "--path", path,
             "--results-path", str(tmp_path / f"alone_{name}")], cwd=tmp_path)
        together = json.loads((tmp_path / f"both_{name}" / "summary.json").read_text())
        alone = json.loads((tmp_path / f"alone_{name}" / "summary.json").read_text())
        assert together["checkpoint"] == path and together["checkpoint_sha256"] == alone["checkpoint_sha256"]
        assert (tmp_path / f"both_{name}" / "predictions.jsonl").read_text() == \
            (tmp_path / f"alone_{name}" / "predictions.jsonl").read_text()


def test_evaluate_needs_one_results_folder_per_checkpoint(trained, tiny_data, tmp_path):
    save, _ = trained
    proc = subprocess.run([sys.executable, "-m", "ofa_ext.cli.evaluate", str(tiny_data), "--path",
                           str(save / "checkpoint_best.pt"), str(save / "checkpoint_last.pt"),
                           "--results-path", str(tmp_path / "one"), "--cpu"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "expected one folder per checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "one").exists()
