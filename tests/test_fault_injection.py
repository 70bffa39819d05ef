"""kill -9 a tiny training run at random moments, inside checkpoint saves too; every resume ends
with the same final checkpoint as the uninterrupted run, and no run leaves a corrupt file behind.

Each run is a process forked from this one after torch and fairseq are imported
(`fork_helpers.py`: a fresh `fairseq-train` costs seconds of imports, a fork none), killed with SIGKILL either after a
random delay or by itself at a chosen checkpoint write: part-way through the first write of a
save (fairseq's `X.pt.tmp`), part-way through a copy (`checkpoint_best.pt`, `checkpoint_last.pt`),
or right after a write. Both entry points are exercised: `fairseq-train --user-dir ofa_ext`
(fairseq's plain copies; the task's start-up check repairs what a kill left) and `ofa-train`
(atomic copies: after every kill each checkpoint is complete or absent).
"""

import io
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from e2e_helpers import TINY_MODEL_ARGS, USER_DIR
from fork_helpers import run_forked, warm_up
from ofa_ext.utils.checkpoint_files import diagnose

MAX_UPDATE = 8
KILLS_PER_ENTRY = 10  # 2 entry points: 20 kills in all (the issue asks for >= 20)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ofa_ext.cli.train_spm import main as train_spm
    from ofa_ext.data.synthetic import make_grounding_splits

    out = tmp_path_factory.mktemp("fault_data")
    make_grounding_splits(out, variant="refcoco", seed=1, n_train=8, n_valid=3, n_test=1, image_size=64)
    train_spm([str(out / "train.tsv"), "--out", str(out), "--vocab-size", "100"])
    return out


def train_args(data: Path, save: Path) -> list:
    return [str(data), "--user-dir", USER_DIR, "--spm-model", str(data / "spm.model"), "--save-dir", str(save),
            "--cpu", *TINY_MODEL_ARGS, "--criterion", "adjust_label_smoothed_cross_entropy", "--optimizer", "adam",
            "--lr", "1e-3", "--batch-size", "2", "--num-workers", "0", "--log-format", "simple", "--seed", "3",
            "--max-update", str(MAX_UPDATE), "--save-interval-updates", "2", "--keep-interval-updates", "1",
            "--validate-interval-updates", "2", "--no-progress-bar"]


def _arm_kill_at_write(event: int, fraction: float) -> None:
    """In the child: SIGKILL itself at its `event`-th checkpoint write, after `fraction` of the bytes."""
    counter = iter(range(1 << 30))
    real_copy, real_save = shutil.copyfile, torch.save

    def copyfile(src, dst, *args, **kwargs):
        if next(counter) == event:
            data = Path(src).read_bytes()
            with open(dst, "wb") as f:
                f.write(data[: int(len(data) * fraction)])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_copy(src, dst, *args, **kwargs)

    def save(obj, f, *args, **kwargs):
        if hasattr(f, "write") and next(counter) == event:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: int(len(buf.getvalue()) * fraction)])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    shutil.copyfile, torch.save = copyfile, save


def run(entry: str, argv: list, log: Path, kill_event=None, kill_after=None) -> str:
    """'done', or 'killed' (SIGKILL by the parent after `kill_after` s, or by itself at `kill_event`)."""
    prepare = None if kill_event is None else (lambda: _arm_kill_at_write(*kill_event))
    code = run_forked(entry, argv, log, kill_after=kill_after, prepare=prepare)
    if code == -signal.SIGKILL:
        return "killed"
    assert code == 0, (log.read_text()[-3000:], Path(str(log) + ".err").read_text()[-3000:])
    return "done"


def _state(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return {"updates": state["optimizer_history"][-1]["num_updates"], "model": state["model"],
            "optimizer": state["last_optimizer_state"]["state"]}


def _assert_same(a: dict, b: dict) -> None:
    assert a["updates"] == b["updates"] == MAX_UPDATE
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"].items():
        for k, v in s.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"][i][k])), (i, k)


def _checkpoints_complete(save: Path) -> list:
    return [f"{p.name}: {diagnose(p)}" for p in save.glob("checkpoint*.pt") if diagnose(p) is not None]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    save = tmp_path_factory.mktemp("reference")
    warm_up(train_args(data, save))
    start = time.monotonic()
    assert run("fairseq-train", train_args(data, save), save / "log.txt") == "done"
    return _state(save / "checkpoint_last.pt"), _state(save / "checkpoint_best.pt"), time.monotonic() - start


def _check_finished(save: Path, ref_last: dict, ref_best: dict) -> None:
    assert not list(save.glob("*.tmp")) and not _checkpoints_complete(save)
    _assert_same(_state(save / "checkpoint_last.pt"), ref_last)
    _assert_same(_state(save / "checkpoint_best.pt"), ref_best)


@pytest.mark.parametrize("entry", ["fairseq-train", "ofa-train"])
def test_kill_and_resume_gives_the_uninterrupted_result(entry, data, reference, tmp_path):
    """Kill, resume, kill ...; a run that reaches the end is compared with the reference and the
    next one starts from scratch, until KILLS_PER_ENTRY kills happened."""
    ref_last, ref_best, seconds = reference
    rng = random.Random(f"{entry}-7")
    save = tmp_path / "ckpt"
    argv = train_args(data, save)
    log = tmp_path / "log.txt"
    kills, kinds, torn_seen, finished = 0, [], 0, 0
    while kills < KILLS_PER_ENTRY:
        if kills % 2 == 0:  # inside or right after a checkpoint write; fraction 0 = empty, 1 = complete
            plan = {"kill_event": (rng.randrange(5), rng.choice([0.0, rng.random(), 1.0]))}
        else:
            plan = {"kill_after": rng.uniform(0.2, 0.8 * seconds)}
        if run(entry, argv, log, **plan) == "done":
            _check_finished(save, ref_last, ref_best)
            finished += 1
            shutil.rmtree(save)
            continue
        kills += 1
        kinds.append("write" if "kill_event" in plan else "timer")
        torn = _checkpoints_complete(save) if save.is_dir() else []
        torn_seen += bool(torn)
        if entry == "ofa-train":
            assert not torn, torn  # atomic copies: complete or absent, even right after the kill
    assert run(entry, argv, log) == "done"
    _check_finished(save, ref_last, ref_best)
    finished += 1
    text = log.read_text()
    repaired = text.count("recovered it from") + text.count("removed it (resuming")
    print(f"{entry}: {kills} kills ({kinds.count('write')} at checkpoint writes, {kinds.count('timer')} timed), "
          f"{kills} resumes, {finished} runs finished, all identical to the uninterrupted run; "
          f"kills that left a torn checkpoint: {torn_seen}, repaired at start: {repaired}")


@pytest.mark.parametrize("entry", ["fairseq-train", "ofa-train"])
def test_rerunning_a_finished_run_changes_nothing(entry, data, reference, tmp_path):
    """fairseq checks --max-update only after an update: a rerun would train update 9 and overwrite
    the finished checkpoints. The task's start-up check ends such a rerun at once, status 0."""
    save, log = tmp_path / "ckpt", tmp_path / "log.txt"
    assert run(entry, train_args(data, save), log) == "done"
    before = {p.name: p.read_bytes() for p in save.glob("checkpoint*.pt")}
    assert run(entry, train_args(data, save), log) == "done"
    assert {p.name: p.read_bytes() for p in save.glob("checkpoint*.pt")} == before
    assert f"is at update {MAX_UPDATE}, --max-update is {MAX_UPDATE}: this run has finished" in log.read_text()
    _check_finished(save, *reference[:2])
    assert run(entry, [*train_args(data, save), "--max-update", str(MAX_UPDATE + 2)], log) == "done"
    assert _state(save / "checkpoint_last.pt")["updates"] == MAX_UPDATE + 2  # a larger budget trains on
