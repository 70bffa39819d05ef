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


# ------------------------------------------------------------------ --commands: many runs, one process


def test_commands_run_in_order_and_stop_at_the_first_failure(monkeypatch, tmp_path, capsys):
    from ofa_ext.cli import launch

    ran = []

    def fake_train(entry, args):
        ran.append(args[0])
        if args[0] == "bad":
            raise SystemExit(3)

    monkeypatch.setattr(launch, "_run_entry", fake_train)
    queue = tmp_path / "queue"
    queue.write_text("# comment\n-- a --lr 1\n\n--nproc 1 -- 'b c'\n-- bad\n-- never\n")
    assert launch.main(["--commands", str(queue)]) == 3 and ran == ["a", "b c", "bad"]
    assert "line 5 failed (exit 3); the runs after it did not start" in capsys.readouterr().err


def test_a_run_that_exits_cleanly_does_not_stop_the_queue(monkeypatch, tmp_path, capsys):
    from ofa_ext.cli import launch

    ran = []

    def fake_train(entry, args):
        ran.append(args[0])
        if args[0] == "exits":
            raise SystemExit()  # sys.exit() without a status: success
        if args[0] == "says":
            raise SystemExit("launch: bad option --x")  # a message: one line, exit 2 (as in its own process)

    monkeypatch.setattr(launch, "_run_entry", fake_train)
    queue = tmp_path / "queue"
    queue.write_text("-- exits\n-- says\n-- never\n")
    assert launch.main(["--commands", str(queue)]) == 2 and ran == ["exits", "says"]
    err = capsys.readouterr().err
    assert err.count("bad option --x") == 1 and "line 2 failed (exit 2)" in err


def test_reset_forgets_the_previous_runs_best_score():
    """Without it, a run whose best score is below the previous run's would never write checkpoint_best.pt."""
    from fairseq import checkpoint_utils
    from fairseq_cli import train

    from ofa_ext.cli.launch import _reset_run_state

    checkpoint_utils.save_checkpoint.best = 0.9
    train.should_stop_early.best, train.should_stop_early.num_runs = 0.1, 4
    _reset_run_state()
    assert not hasattr(checkpoint_utils.save_checkpoint, "best")
    assert not hasattr(train.should_stop_early, "best") and not hasattr(train.should_stop_early, "num_runs")


@pytest.mark.parametrize("text,message", [
    ("-- a\n--nproc 2 -- b\n", "line 2: only single-process runs can share a process"),
    ("-- 'a\n", "line 1: No closing quotation"),
    ("--no-such-flag x\n", "line 1: not ofa-launch arguments"),
    ("--then-pieces \"export 'x\" -- a\n", "--then-pieces"),
    ("# nothing\n\n", "no command in the file"),
])
def test_bad_commands_files_fail_before_any_run(monkeypatch, tmp_path, capsys, text, message):
    from ofa_ext.cli import launch

    ran = _record_launch(monkeypatch)
    queue = tmp_path / "queue"
    queue.write_text(text)
    with pytest.raises(SystemExit) as exc:
        launch.main(["--commands", str(queue)])
    assert message in str(exc.value) and ran == []


def test_commands_file_that_does_not_exist(tmp_path):
    from ofa_ext.cli import launch

    with pytest.raises(SystemExit, match="--commands .*missing: No such file"):
        launch.main(["--commands", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="takes no other run"):
        launch.main(["--commands", str(tmp_path / "missing"), "--", "data"])
