"""The demo's slot pool (run_scripts/demo/common.sh `job` under demo.sh): two stages sharing two
slots never run more than two commands at once, do run two, and a failed command gives its slot back."""

import subprocess
from pathlib import Path

from e2e_helpers import REPO

SCRIPT = r"""
set -euo pipefail
cd "$REPO"
export OUT=$T/out WORK=$T/out/work QUICK=1
pool=$T/slots; mkfifo "$pool"; exec 9<>"$pool"; rm "$pool"; printf xx >&9
export DEMO_POOL=1
stage() {  # NAME FAIL: three jobs, the second failing when FAIL=1
  source run_scripts/demo/common.sh
  for i in 1 2 3; do
    job "$1_$i" bash -c "echo s >> $T/trace; sleep 0.4; echo e >> $T/trace; [[ $i != 2 || $2 != 1 ]]"
  done
  wait_jobs
}
( stage a 0 ) & a=$!
( stage b "$FAIL_B" ) & b=$!
wait $a; status_a=$?
wait $b && status_b=0 || status_b=$?
echo "a=$status_a b=$status_b"
"""


def run_pool(tmp_path: Path, fail_b: str) -> tuple:
    proc = subprocess.run(["bash", "-c", SCRIPT], env={"PATH": "/usr/bin:/bin", "REPO": str(REPO), "T": str(tmp_path),
                                                      "FAIL_B": fail_b}, capture_output=True, text=True, timeout=60)
    running, most = 0, 0
    for mark in (tmp_path / "trace").read_text().split():
        running += 1 if mark == "s" else -1
        most = max(most, running)
    return proc, most, (tmp_path / "trace").read_text().split().count("s")


def test_two_stages_share_two_slots(tmp_path):
    proc, most, started = run_pool(tmp_path, "0")
    assert proc.stdout.strip().endswith("a=0 b=0"), proc.stdout + proc.stderr
    assert started == 6 and most == 2


def test_a_failed_job_gives_its_slot_back(tmp_path):
    proc, most, started = run_pool(tmp_path, "1")
    assert proc.stdout.strip().endswith("a=0 b=1"), proc.stdout + proc.stderr
    assert "job b_2 failed" in proc.stderr
    assert started == 6 and most == 2  # the other stage and b's last job still ran
