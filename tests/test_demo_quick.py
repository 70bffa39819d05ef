"""`make demo` in its QUICK=1 mode: every stage runs end to end at toy size and reports.

The numbers are meaningless at this size (a few updates on ~100 rows); this checks that the whole
pipeline — data, training, evaluation, PETL, task embeddings, similarity, interpolation — runs and
writes what a person reads.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

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
                   "demo: similarity ", "demo: interpolation acc@0.5=", "demo: xmodal 1shot image-only="):
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)
    assert json.loads((out / "grounding" / "summary.json").read_text())["n"] > 0
    petl = json.loads((out / "petl" / "petl.json").read_text())
    assert set(petl) == {"full", "adapter", "prefix", "lora", "bitfit"}
    assert all(petl[m]["trainable_percent"] < petl["full"]["trainable_percent"] for m in petl if m != "full")
    assert (out / "pi_tuning" / "summary.json").is_file() and (out / "pi_tuning" / "task_sim.png").is_file()
