"""Time per update of `fairseq-train --task refcoco` on 2 CPU processes against 1, same global batch.

    python benchmarks/bench_two_process.py [--batch 32] [--updates 40] [--rounds 2] [--image-size 64]

Runs the demo's model (ofa_nano, one thread per process) on generated data through
run_scripts/launch.sh, alternating 1 process (batch B) and 2 processes (batch B/2 each) for
--rounds rounds, and reads fairseq's `train_wall` (seconds spent in training steps, start-up and
validation excluded) from the end-of-epoch log line. Prints a JSON object on the last line:
the median seconds per update of each and their ratio (2 processes / 1 process; < 1 = faster).
On a machine with fewer free cores than processes, the ratio measures contention, not scaling.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_data(out: Path, rows: int, image_size: int) -> Path:
    from ofa_ext.cli.train_spm import main as train_spm
    from ofa_ext.data.synthetic import make_grounding_splits

    make_grounding_splits(out, variant="refcoco", seed=1, n_train=rows, n_valid=8, n_test=8, image_size=image_size)
    train_spm([str(out / "train.tsv"), "--out", str(out), "--vocab-size", "100"])
    return out


def seconds_per_update(data: Path, save: Path, nproc: int, batch: int, updates: int, image_size: int) -> float:
    args = [str(data), "--user-dir", str(REPO / "ofa_ext"), "--task", "refcoco", "--arch", "ofa_nano",
            "--bpe", "sentencepiece", "--spm-model", str(data / "spm.model"), "--code-dict-size", "0",
            "--num-bins", "100", "--patch-image-size", str(image_size), "--max-image-size", str(image_size),
            "--criterion", "adjust_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
            "--batch-size", str(batch // nproc), "--required-batch-size-multiple", "1", "--num-workers", "0",
            "--max-update", str(updates), "--max-epoch", "1", "--disable-validation", "--no-save",
            "--log-format", "simple", "--log-interval", "1000", "--save-dir", str(save)]
    env = dict(os.environ, NPROC=str(nproc), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(["bash", "run_scripts/launch.sh", *args], cwd=REPO, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"run with {nproc} processes failed:\n{log[-3000:]}")
    walls = re.findall(r"epoch \d+ \|.*?num_updates \d+.*?train_wall ([0-9.]+)", log)
    if not walls:
        raise SystemExit(f"no end-of-epoch train line in the log:\n{log[-3000:]}")
    return float(walls[-1]) / updates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="global batch (2 processes: half each)")
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    a = p.parse_args()
    times = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data", a.batch * a.updates, a.image_size)
        for r in range(a.rounds):
            for nproc in (1, 2):
                times[nproc].append(seconds_per_update(data, Path(tmp) / f"save{r}_{nproc}", nproc, a.batch, a.updates,
                                                       a.image_size))
                print(f"round {r}: {nproc} process(es): {times[nproc][-1] * 1000:.0f} ms/update", file=sys.stderr)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(json.dumps({"batch": a.batch, "updates": a.updates, "image_size": a.image_size, "rounds": a.rounds,
                      "cpu_count": os.cpu_count(), "one_process_s_per_update": round(one, 4),
                      "two_processes_s_per_update": round(two, 4), "two_over_one": round(two / one, 3)}))


if __name__ == "__main__":
    main()
