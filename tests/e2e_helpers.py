"""Helpers for tests that run the real command-line tools in subprocesses on tiny generated data."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "ofa_ext")

# A tiny grounding run: nano arch, 64 px images, sentencepiece vocabulary, 100 bins, no image codes.
TINY_MODEL_ARGS = [
    "--task", "refcoco", "--arch", "ofa_nano", "--bpe", "sentencepiece",
    "--code-dict-size", "0", "--num-bins", "100", "--patch-image-size", "64", "--max-image-size", "64",
]
TINY_TRAIN_ARGS = [
    "--criterion", "adjust_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
    "--batch-size", "8", "--num-workers", "0", "--log-format", "simple", "--log-interval", "1",
    "--seed", "3",
]


def make_tiny_grounding_data(out: Path, variant: str = "refcoco", n_train: int = 32, seed: int = 1) -> Path:
    """train/valid/test TSVs (+ spm.model) small enough for a few-second training run."""
    from ofa_ext.cli.train_spm import main as train_spm
    from ofa_ext.data.synthetic import make_grounding_splits

    make_grounding_splits(out, variant=variant, seed=seed, n_train=n_train, n_valid=16, n_test=16, image_size=64)
    train_spm([str(out / "train.tsv"), "--out", str(out), "--vocab-size", "100"])
    return out


def run(cmd: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                             f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def fairseq_train(data: Path, save_dir: Path, extra: list, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", USER_DIR,
           "--spm-model", str(data / "spm.model"), "--save-dir", str(save_dir), "--cpu",
           *TINY_MODEL_ARGS, *TINY_TRAIN_ARGS, *extra]
    return run(cmd, cwd)


def load_for_eval(path, overrides=None):
    """(model in eval mode, task) of one of our fairseq checkpoints."""
    from ofa_ext.utils.checkpoints import load_fairseq_checkpoint

    model, _, task = load_fairseq_checkpoint(str(path), overrides)
    return model.eval(), task


def valid_logits(model, task, n: int = 4):
    """Logits of the first `n` validation samples: what two models must agree on."""
    import torch

    task.load_dataset("valid")
    ds = task.dataset("valid")
    batch = ds.collater([ds[i] for i in range(n)])
    with torch.no_grad():
        return model(**batch["net_input"])[0]
