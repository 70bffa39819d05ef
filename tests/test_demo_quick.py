"""`make demo` in its QUICK=1 mode: every stage runs end to end at toy size and reports.

The numbers are meaningless at this size (a few updates on ~100 rows); this checks that the whole
pipeline — data, training, evaluation, PETL, task embeddings, similarity, interpolation — runs and
writes what a person reads. Every stage goes through the run scripts of run_scripts/refcoco.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from e2e_helpers import REPO


def test_quick_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, QUICK="1", OUT=str(out), PYTHONWARNINGS="ignore",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "run_scripts/demo/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("demo: ")]
    for prefix in ("demo: grounding acc@0.5=", "demo: petl adapter acc@0.5=", "demo: petl lora acc@0.5=",
                   "demo: similarity ", "demo: interpolation acc@0.5="):
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)
    assert json.loads((out / "grounding" / "summary.json").read_text())["n"] > 0
    petl = json.loads((out / "petl" / "petl.json").read_text())
    assert set(petl) == {"full", "adapter", "prefix", "lora", "bitfit"}
    assert all(petl[m]["trainable_percent"] < petl["full"]["trainable_percent"] for m in petl if m != "full")
    assert (out / "pi_tuning" / "summary.json").is_file() and (out / "pi_tuning" / "s1" / "task_sim.png").is_file()
    assert "Stage 3: π-Tuning" in (out / "README.md").read_text()  # the run's record, written from the summaries
    pi = json.loads((out / "pi_tuning" / "summary.json").read_text())
    profiles = pi["task_profiles"]
    assert set(profiles) == {"refcoco", "refcoco+", "largest", "region", "refcocog"}
    emb = load_file(str(out / "pi_tuning" / "s1" / "task_emb" / "region.safetensors"))
    assert profiles["region"]["fisher_mass"]["mean"] == pytest.approx(sum(float(v.double().sum()) for v in emb.values()),
                                                                     rel=1e-4)
    with open(out / "pi_tuning" / "s1" / "task_sim.csv", newline="") as f:
        header, *matrix = list(csv.reader(f))
    row = matrix[header.index("region")]
    closest = max(float(v) for j, v in enumerate(row) if header[j] != "region")
    assert profiles["region"]["closest_other"]["mean"] == pytest.approx(closest)
    anatomy = (out / "pi_tuning" / "fisher_anatomy.md").read_text()
    assert "| s1 | region |" in anatomy and "| s1 | refcocog |" in anatomy
    # what benchmarks/bench_demo.py reads: the stage times and one row per background job, all passed
    stages = json.loads((out / "work" / "logs" / "stages.json").read_text())
    assert set(stages) == {"grounding", "petl + pi_tuning"} and all(v >= 0 for v in stages.values())
    rows = [line.split("\t") for line in (out / "work" / "logs" / "jobs.tsv").read_text().splitlines()]
    names = {r[0] for r in rows}
    assert {"data_region", "petl_s1", "experts_s1", "emb_s1", "interpolation_s1",
            "eval_checkpoints"} <= names
    assert all(r[4] == "0" and float(r[2]) >= float(r[1]) and float(r[3]) >= 0 for r in rows)
    assert any(float(r[3]) > 1 for r in rows if r[0].startswith("petl_"))  # a training run's CPU is counted
