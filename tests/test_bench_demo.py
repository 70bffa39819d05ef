"""benchmarks/bench_demo.py against a stand-in demo: what it reads, whose CPU it counts, failures."""

import json
import subprocess
import sys

import pytest

from e2e_helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_demo  # noqa: E402

STAND_IN = r"""
set -euo pipefail
mkdir -p "$OUT/work/logs"
python -c "sum(range(3_000_000))"   # a little CPU of its own
sleep 0.6                           # while the busy processes (if any) burn theirs
printf 'petl_s1\t10.0\t12.5\t2.0\t0\nexperts_s2\t11.0\t12.0\t1.0\t0\nexperts_s1\t12.0\t15.0\t3.0\t0\n' \
  > "$OUT/work/logs/jobs.tsv"
echo '{"grounding": 3, "petl + pi_tuning": 4}' > "$OUT/work/logs/stages.json"
exit "${STAND_IN_EXIT:-0}"
"""


@pytest.mark.parametrize("name,kind", [("petl_s2", "petl"), ("experts_s1", "experts"), ("emb_s3", "emb"),
                                       ("data_largest", "data"), ("data_refcoco+", "data"),
                                       ("interpolation_s1", "interpolation"), ("eval_checkpoints", "eval_checkpoints")])
def test_job_kind(name, kind):
    assert bench_demo.job_kind(name) == kind


def test_bench_reads_the_demos_records_and_counts_only_the_demos_cpu(tmp_path, capsys):
    demo = tmp_path / "demo.sh"
    demo.write_text(STAND_IN)
    bench_demo.main(["--load", "0", "1", "--demo", str(demo), "--keep", str(tmp_path / "runs")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    quiet, loaded = result["runs"]
    assert (quiet["load"], loaded["load"]) == (0, 1)
    assert quiet["stages_s"] == {"grounding": 3, "petl + pi_tuning": 4}
    assert quiet["jobs"] == {"experts": {"count": 2, "cpu_s": 4.0, "wall_s": 4.0},
                             "petl": {"count": 1, "cpu_s": 2.0, "wall_s": 2.5}}
    assert quiet["n_jobs"] == 3
    # the busy process burns ~0.6 s beside the stand-in; none of it may be counted as the demo's
    assert loaded["cpu_s"] < 0.5 and loaded["wall_s"] >= 0.6
    assert set(result["wall_vs_quiet"]) == {"1"}
    assert (tmp_path / "runs" / "demo_load1_1" / "work" / "logs" / "jobs.tsv").is_file()


def test_a_failed_demo_is_one_message_with_its_log(tmp_path, monkeypatch):
    demo = tmp_path / "demo.sh"
    demo.write_text(STAND_IN)
    monkeypatch.setenv("STAND_IN_EXIT", "3")
    with pytest.raises(SystemExit, match=r"the demo failed \(exit 3\) beside 0 busy processes"):
        bench_demo.main(["--load", "0", "--demo", str(demo)])


def test_bad_load_is_one_line():
    proc = subprocess.run([sys.executable, "benchmarks/bench_demo.py", "--load", "-1"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--load: expected numbers of busy processes >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr
