"""Wall and CPU time of `make demo` (run_scripts/demo/demo.sh), quiet and beside outside load.

    python benchmarks/bench_demo.py [--load 0 2] [--quick] [--keep DIR]

For each value of --load, runs the whole demo from nothing in a fresh OUT (never results/demo)
while that many busy processes (one endless loop each, like a CI run's pytest workers) share the
machine, then reads what the demo records about itself: the stage times (work/logs/stages.json)
and one row per background job (work/logs/jobs.tsv: start, end, CPU seconds, exit status).
Prints, per load, the total wall and CPU time, the stages, and the jobs grouped by kind (count, CPU
seconds, wall seconds summed over the jobs); the last line is a JSON object with all of it and the
ratio of each loaded wall time to the quiet one (--load must then include 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "run_scripts" / "demo" / "demo.sh"


def job_kind(name: str) -> str:
    """petl_s2 -> petl, experts_s1 -> experts, data_largest -> data: a job's name without its seed or variant."""
    name = re.sub(r"_s\d+$", "", name)
    return "data" if name.startswith("data_") else name


def read_jobs(logs: Path) -> list[dict]:
    path = logs / "jobs.tsv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{"name": r[0], "wall": float(r[2]) - float(r[1]), "cpu": float(r[3]), "status": int(r[4])}
                for r in csv.reader(f, delimiter="\t")]


def group_jobs(jobs: list[dict]) -> dict[str, dict]:
    kinds: dict[str, dict] = defaultdict(lambda: {"count": 0, "cpu_s": 0.0, "wall_s": 0.0})
    for j in jobs:
        k = kinds[job_kind(j["name"])]
        k["count"] += 1
        k["cpu_s"] = round(k["cpu_s"] + j["cpu"], 1)
        k["wall_s"] = round(k["wall_s"] + j["wall"], 1)
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["cpu_s"]))


def burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_demo(out: Path, load: int, quick: bool, demo: Path) -> dict:
    env = dict(os.environ, OUT=str(out), PYTHONWARNINGS="ignore",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if quick:
        env["QUICK"] = "1"
    log = out.parent / f"{out.name}.log"
    busy = burners(load)
    try:
        start = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.Popen(["bash", str(demo)], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU, not the burners'
        wall = time.perf_counter() - start
    finally:
        for b in busy:
            b.kill()
            b.wait()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench_demo: the demo failed (exit {code}) beside {load} busy processes; "
                         f"end of {log}:\n{log.read_text()[-3000:]}")
    logs = out / "work" / "logs"
    stages = json.loads((logs / "stages.json").read_text())
    jobs = read_jobs(logs)
    failed = [j["name"] for j in jobs if j["status"] != 0]
    if failed:
        raise SystemExit(f"bench_demo: jobs {failed} failed although the demo exited 0 (see {logs})")
    return {"load": load, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "stages_s": stages, "jobs": group_jobs(jobs), "n_jobs": len(jobs)}


def minutes(s: float) -> str:
    return f"{int(s // 60)} min {s % 60:.0f} s"


def report(r: dict) -> None:
    print(f"== beside {r['load']} busy processes: {minutes(r['wall_s'])} wall, {minutes(r['cpu_s'])} CPU "
          f"({r['cpu_s'] / r['wall_s']:.2f} cores busy on average), {r['n_jobs']} background jobs")
    print("   stages: " + ", ".join(f"{k} {minutes(v)}" for k, v in r["stages_s"].items()))
    print(f"   {'job kind':<24}{'count':>6}{'CPU s':>9}{'wall s':>9}")
    for kind, k in r["jobs"].items():
        print(f"   {kind:<24}{k['count']:>6}{k['cpu_s']:>9.1f}{k['wall_s']:>9.1f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", type=int, nargs="+", default=[0, 2],
                   help="busy processes beside the demo, one run each (default: 0 then 2)")
    p.add_argument("--quick", action="store_true", help="QUICK=1: toy size (checks the bench, measures nothing)")
    p.add_argument("--keep", type=Path, help="keep each run's OUT under this folder (default: a removed temp folder)")
    p.add_argument("--demo", type=Path, default=DEMO, help=argparse.SUPPRESS)  # tests swap in a stand-in
    a = p.parse_args(argv)
    if any(n < 0 for n in a.load):
        p.error(f"--load: expected numbers of busy processes >= 0, got {a.load}")
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        root = a.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        runs = []
        for i, n in enumerate(a.load):
            out = root / f"demo_load{n}_{i}"
            if out.exists():
                raise SystemExit(f"bench_demo: {out} exists; the bench runs the demo from nothing (remove it)")
            runs.append(run_demo(out, n, a.quick, a.demo))
            report(runs[-1])
    quiet = next((r["wall_s"] for r in runs if r["load"] == 0), None)
    ratios = {str(r["load"]): round(r["wall_s"] / quiet, 2) for r in runs if quiet and r["load"] != 0}
    if ratios:
        print("wall time beside n busy processes / quiet: " + ", ".join(f"n={k}: {v}" for k, v in ratios.items()))
    print(json.dumps({"quick": a.quick, "cpus": os.cpu_count(), "runs": runs, "wall_vs_quiet": ratios}))


if __name__ == "__main__":
    main()
