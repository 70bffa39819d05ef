#!/usr/bin/env python
"""Sweep Lin et al.'s hyper-parameter grids with fairseq-train, select by validation accuracy per seed.

    python run_scripts/xmodal/grid.py --features features/pets --grid linear --shots 1,2,4,8,16 \
        --seeds 1,2,3 --out results/xmodal/pets_linear

Each (shots, seed, lr, weight decay, batch) is one ``fairseq-train --task crossmodal_adaptation``
run with ``--valid-subset valid,test`` and no checkpoints: the validation and test accuracies of
every 100-update evaluation are read from its JSON log. Per (shots, seed), the configuration and
evaluation step with the best validation accuracy win (ties: the earlier step, then the earlier
configuration in grid order, as the released code keeps the earlier state); its test accuracy,
WiSE-FT test accuracy and the zero-shot test accuracy are reported, then mean ± std over seeds.
A batch size whose halves do not fit the tables is skipped *with its one-line reason* (the
released code skips such sizes silently). Writes ``OUT/runs.jsonl``, ``OUT/summary.json`` and
``OUT/table.md``; the last stdout line is the summary JSON.
"""

import argparse
import itertools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

USER_DIR = str(Path(__file__).resolve().parents[2] / "ofa_ext")
GRIDS = {  # specs/crossmodal_adaptation.md §6
    "linear": {"lr": [1e-3, 1e-4], "weight_decay": [0.0, 1e-2, 1e-4], "batch": [8, 32]},
    "adapter": {"lr": [1e-4, 1e-5, 1e-6, 1e-7], "weight_decay": [0.0, 1e-3, 1e-5], "batch": [8]},
    "partial": {"lr": [1e-5, 1e-6, 1e-7], "weight_decay": [0.0, 1e-3, 1e-5], "batch": [8]},
    "audio": {"lr": [1e-1, 1e-2, 1e-3, 1e-4], "weight_decay": [0.0, 1e-2, 1e-4], "batch": [8]},
}
LOG = re.compile(r"\| (valid|test) \| (\{.*\})\s*$")
TOO_BIG = re.compile(r"(--batch-size \d+: the text half .*)$", re.M)


def parse_log(text: str) -> list:
    """[(updates, {valid_accuracy, test_accuracy, ...}), ...] in log order."""
    evals = {}
    for line in text.splitlines():
        m = LOG.search(line)
        if m:
            rec = json.loads(m.group(2))
            step = int(rec.get(f"{m.group(1)}_num_updates", 0))
            evals.setdefault(step, {}).update({k: float(v) for k, v in rec.items() if "accuracy" in k})
    return sorted(evals.items())


def select(runs: list) -> dict:
    """Best (run, step) by validation accuracy; ties keep the earlier step, then the earlier run."""
    best = None
    for i, run in enumerate(runs):
        for step, acc in run.get("evals", []):
            key = (acc.get("valid_accuracy", -1.0), -step, -i)
            if best is None or key > best[0]:
                best = (key, run, step, acc)
    if best is None:
        return {}
    _, run, step, acc = best
    return {"config": run["config"], "step": step, "valid": acc.get("valid_accuracy"),
            "test": acc.get("test_accuracy"), "test_wiseft": acc.get("test_accuracy_wiseft"),
            "test_zeroshot": acc.get("test_accuracy_zeroshot")}


def mean_std(values: list) -> list:
    values = [v for v in values if v is not None]
    if not values:
        return [None, None]
    return [round(statistics.fmean(values), 2), round(statistics.pstdev(values), 2) if len(values) > 1 else 0.0]


def train_command(a, shots: int, seed: int, cfg: dict) -> list:
    return [sys.executable, "-m", "fairseq_cli.train", a.features, "--user-dir", USER_DIR, "--cpu",
            "--task", "crossmodal_adaptation", "--shots", str(shots), "--seed", str(seed),
            "--modality", a.modality, "--text-batch-ratio", str(a.text_batch_ratio),
            "--updates-per-epoch", str(a.updates_per_epoch), "--wise-ft-alpha", str(a.wise_ft_alpha),
            "--arch", "xmodal_head", "--head", a.head, "--classifier-init", a.init,
            *([] if a.logit_scale is None else ["--logit-scale", str(a.logit_scale)]), *shlex.split(a.petl),
            "--criterion", "xmodal_ce", "--optimizer", "adam", "--adam-betas", "(0.9,0.999)",
            "--lr", str(cfg["lr"]), "--weight-decay", str(cfg["weight_decay"]), "--batch-size", str(cfg["batch"]),
            "--lr-scheduler", "cosine", "--warmup-updates", str(a.warmup_updates), "--warmup-init-lr", "1e-5",
            "--max-update", str(a.max_update), "--valid-subset", "valid,test", "--no-save",
            "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", "--seed", str(seed),
            "--log-format", "json", "--log-interval", str(a.updates_per_epoch), "--num-workers", "0"]


def one_run(a, shots: int, seed: int, cfg: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(train_command(a, shots, seed, cfg), capture_output=True, text=True, env=env, timeout=3600)
    log = proc.stdout + proc.stderr
    rec = {"shots": shots, "seed": seed, "config": cfg, "rc": proc.returncode}
    if proc.returncode != 0:
        m = TOO_BIG.search(log)
        rec["skipped"] = m.group(1) if m else log.strip().splitlines()[-1][:300]
        return rec
    rec["evals"] = parse_log(log)
    return rec


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True, help="folder written by ofa-extract-features")
    p.add_argument("--out", required=True)
    p.add_argument("--grid", default="linear", choices=sorted(GRIDS))
    p.add_argument("--lrs", default=None, help="override the grid's learning rates (comma-separated)")
    p.add_argument("--weight-decays", default=None, help="override the grid's weight decays")
    p.add_argument("--batches", default=None, help="override the grid's batch sizes")
    p.add_argument("--shots", default="1,2,4,8,16")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--modality", default="cross_modal", choices=["cross_modal", "uni_modal"])
    p.add_argument("--head", default="linear", choices=["linear", "adapter", "partial"],
                   help="partial: features extracted with --layer k; use --grid partial")
    p.add_argument("--init", default="zeroshot", choices=["zeroshot", "random"])
    p.add_argument("--logit-scale", type=float, default=None, help="default: the head's (4.60517; partial 4.0)")
    p.add_argument("--petl", default="", help="PETL flags for the partial head's blocks, e.g. '--lora --lora-r 4'")
    p.add_argument("--text-batch-ratio", type=float, default=0.5)
    p.add_argument("--wise-ft-alpha", type=float, default=0.5)
    p.add_argument("--max-update", type=int, default=12800)
    p.add_argument("--updates-per-epoch", type=int, default=100, help="= validation interval")
    p.add_argument("--warmup-updates", type=int, default=50)
    p.add_argument("--jobs", type=int, default=1, help="fairseq-train processes at once")
    a = p.parse_args(argv)
    grid = dict(GRIDS[a.grid])
    for key, opt in (("lr", a.lrs), ("weight_decay", a.weight_decays), ("batch", a.batches)):
        if opt:
            grid[key] = [int(v) if key == "batch" else float(v) for v in opt.split(",")]
    configs = [dict(zip(("lr", "weight_decay", "batch"), c))
               for c in itertools.product(grid["lr"], grid["weight_decay"], grid["batch"])]
    jobs = [(int(s), int(seed), c) for s in a.shots.split(",") for seed in a.seeds.split(",") for c in configs]
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        runs = list(pool.map(lambda j: one_run(a, *j), jobs))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.jsonl", "w") as f:
        for r in runs:
            f.write(json.dumps(r) + "\n")
    for r in runs:
        if "skipped" in r:
            print(f"skipped: shots={r['shots']} seed={r['seed']} {r['config']}: {r['skipped']}")
    per_seed, summary = {}, {}
    for shots in sorted({j[0] for j in jobs}):
        chosen = []
        for seed in sorted({j[1] for j in jobs}):
            sel = select([r for r in runs if r["shots"] == shots and r["seed"] == seed and "evals" in r])
            per_seed[f"{shots}/{seed}"] = sel
            chosen.append(sel)
        summary[str(shots)] = {k: mean_std([c.get(k) for c in chosen]) for k in ("test", "test_wiseft", "test_zeroshot")}
    result = {"features": a.features, "grid": grid, "modality": a.modality, "head": a.head, "init": a.init,
              "max_update": a.max_update, "per_seed": per_seed, "summary": summary,
              "skipped": sum("skipped" in r for r in runs), "runs": len(runs)}
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    lines = [f"| shots | test acc. (mean ± std over seeds) | WiSE-FT | zero-shot |", "|---|---|---|---|"]
    for shots, s in summary.items():
        cell = lambda v: "n/a" if v[0] is None else f"{v[0]:.1f} ± {v[1]:.1f}"  # noqa: E731
        lines.append(f"| {shots} | {cell(s['test'])} | {cell(s['test_wiseft'])} | {cell(s['test_zeroshot'])} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"summary": summary, "runs": len(runs), "skipped": result["skipped"]}))
    return result


if __name__ == "__main__":
    main()
