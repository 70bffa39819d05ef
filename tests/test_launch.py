"""The torchrun launcher passes each worker the fairseq flags that match its environment."""

import pytest

from ofa_ext.cli.launch import worker_flags


def test_cpu_worker_flags():
    flags = worker_flags({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, use_gpu=False)
    assert "--distributed-rank=1" in flags and "--distributed-world-size=2" in flags
    assert {"--cpu", "--distributed-backend=gloo", "--ddp-backend=legacy_ddp", "--distributed-no-spawn",
            "--distributed-init-method=env://"} <= set(flags)


def test_gpu_worker_flags():
    flags = worker_flags({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}, use_gpu=True)
    assert "--device-id=3" in flags and "--distributed-backend=nccl" in flags and "--cpu" not in flags


def test_missing_environment_is_explained():
    with pytest.raises(SystemExit, match="RANK"):
        worker_flags({}, use_gpu=False)


def _record_launch(monkeypatch, train=None, status=0):
    """Replace training and ofa-pieces by recorders; returns the list of what ran, in order."""
    from ofa_ext.cli import launch, pieces

    ran = []

    def fake_train(entry, args):
        ran.append(("train", entry, args))
        if train is not None:
            train()

    monkeypatch.setattr(launch, "_run_entry", fake_train)
    monkeypatch.setattr(launch.subprocess, "call", lambda command, env: ran.append(("torchrun", command)) or status)
    monkeypatch.setattr(pieces, "main", lambda argv: ran.append(("pieces", argv)) or 0)
    return ran


def test_then_pieces_runs_in_process_after_training(monkeypatch):
    from ofa_ext.cli.launch import main

    ran = _record_launch(monkeypatch)
    assert main(["--then-pieces", "export 'a dir/best.pt' out.safetensors --task-name refcoco", "--", "data"]) == 0
    assert [r[0] for r in ran] == ["train", "pieces"]
    assert ran[1][1] == ["export", "a dir/best.pt", "out.safetensors", "--task-name", "refcoco"]


def test_then_pieces_is_skipped_when_training_fails(monkeypatch):
    from ofa_ext.cli.launch import main

    def crash():
        raise SystemExit(1)

    ran = _record_launch(monkeypatch, train=crash)
    with pytest.raises(SystemExit):
        main(["--then-pieces", "export best.pt out.safetensors", "--", "data"])
    assert [r[0] for r in ran] == ["train"]
    ran = _record_launch(monkeypatch, status=3)  # several processes: torchrun's exit status is returned
    assert main(["--nproc", "2", "--then-pieces", "export best.pt out.safetensors", "--", "data"]) == 3
    assert [r[0] for r in ran] == ["torchrun"]
    ran = _record_launch(monkeypatch, status=0)
    assert main(["--nproc", "2", "--then-pieces", "export best.pt out.safetensors", "--", "data"]) == 0
    assert [r[0] for r in ran] == ["torchrun", "pieces"]


def test_malformed_then_pieces_fails_before_training(monkeypatch, capsys):
    from ofa_ext.cli.launch import main
    from ofa_ext.utils.errors import InputErrorExit

    ran = _record_launch(monkeypatch)
    with pytest.raises(InputErrorExit):
        main(["--then-pieces", "export 'unclosed best.pt out", "--", "data"])
    assert ran == []
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--then-pieces" in err and "No closing quotation" in err
