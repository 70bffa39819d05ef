"""2 CPU processes = 1 process for `refcoco`, with full fine-tuning and with LoRA.

The same total batch (1 x 8 rows, 2 x 4 rows), the same rows in every update (--file-order: fairseq
shuffles the order of the *batches*, whose size differs between the two runs), no dropout, and
eval-mode BatchNorm (--freeze-resnet: BatchNorm statistics are per process, not synchronised). Then
the losses of the first 5 updates agree within 1e-5 relative, the final weights within float
summation noise, and validation Acc@0.5 is the same. Both runs go through run_scripts/launch.sh.

The losses are read unrounded from the checkpoint written after every update (the `train`
meters of fairseq's metrics state hold the last update's value; the logs round to 3 digits).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e2e_helpers import REPO, TINY_MODEL_ARGS, USER_DIR, make_tiny_grounding_data

UPDATES = 5
METHODS = {"full": [], "lora": ["--lora", "--lora-r", "4", "--lora-targets", "q_proj,v_proj,fc1"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_grounding_data(tmp_path_factory.mktemp("data"), n_train=UPDATES * 8)


def launch(data: Path, save: Path, nproc: int, extra: list) -> str:
    args = [str(data), "--user-dir", USER_DIR, "--spm-model", str(data / "spm.model"), *TINY_MODEL_ARGS,
            "--criterion", "adjust_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--lr", "1e-3", "--clip-norm", "1.0", "--seed", "3",
            "--batch-size", str(8 // nproc), "--required-batch-size-multiple", "1", "--num-workers", "0",
            "--file-order", "--freeze-resnet", "--dropout", "0", "--attention-dropout", "0",
            "--encoder-drop-path-rate", "0", "--decoder-drop-path-rate", "0",
            "--max-update", str(UPDATES), "--save-interval-updates", "1", "--keep-interval-updates", "-1",
            "--no-epoch-checkpoints", "--eval-acc", "--validate-interval-updates", str(UPDATES),
            "--eval-args", '{"beam":2,"min_len":4,"max_len_a":0,"max_len_b":4}',
            "--log-format", "simple", "--log-interval", "1", "--save-dir", str(save), *extra]
    env = dict(os.environ, NPROC=str(nproc), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "run_scripts/launch.sh", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


def update_losses(save: Path) -> list:
    """The training loss of updates 1..UPDATES, unrounded, from the per-update checkpoints."""
    losses = []
    for k in range(1, UPDATES + 1):  # the last update ends the epoch: checkpoint_last.pt
        (path,) = save.glob(f"checkpoint_*_{k}.pt") if k < UPDATES else [save / "checkpoint_last.pt"]
        meters = dict(torch.load(path, map_location="cpu", weights_only=False)["extra_state"]["metrics"])["train"]
        (loss,) = [state["val"] for _, key, _, state in meters if key == "loss"]
        losses.append(float(loss))
    return losses


def valid_score(log: str) -> str:
    scores = re.findall(r"\| valid on 'valid' subset.*?\| score ([0-9.]+)", log)
    assert scores, log[-3000:]
    return scores[-1]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_equal_one(method, data, tmp_path):
    one_log = launch(data, tmp_path / "one", 1, METHODS[method])
    two_log = launch(data, tmp_path / "two", 2, METHODS[method])
    assert "distributed init (rank 1)" in two_log
    one, two = update_losses(tmp_path / "one"), update_losses(tmp_path / "two")
    assert len(set(one)) == UPDATES, one  # the model learns: five different losses
    for k, (a, b) in enumerate(zip(one, two), 1):
        assert abs(a - b) <= 1e-5 * abs(a), (k, a, b)
    final = [torch.load(tmp_path / run / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
             for run in ("one", "two")]
    assert final[0].keys() == final[1].keys()
    moved = 0
    start = torch.load(next((tmp_path / "one").glob("checkpoint_*_1.pt")), map_location="cpu",
                       weights_only=False)["model"]
    for key, a in final[0].items():
        if a.is_floating_point():
            torch.testing.assert_close(final[1][key], a, rtol=1e-4, atol=1e-6, msg=key)
            moved += int(not torch.equal(a, start[key]))
    assert moved > 0
    assert valid_score(one_log) == valid_score(two_log)
