"""Summarise the demo's π-Tuning stage over its seeds: Acc@0.5 of the interpolation, its collapsed
piece file, the low-data expert alone, each source expert and the foundation (mean ± std over the
seeds), the similarities of the target to each source (mean ± std, and the top-k of every seed), and
the learned weights. Writes PI_DIR/summary.json and prints the `demo:` lines.

Usage: python run_scripts/demo/pi_report.py PI_DIR CKPT_ROOT TARGET N_LOW ROWS UPDATES DURATIONS_JSON "SEED ..." SOURCE...
"""

import csv
import json
import statistics
import sys
from pathlib import Path

from ofa_ext.metrics.fisher import fisher_mass, load_task_embedding
from ofa_ext.models.petl import read_piece_file


def mean_std(values: list) -> dict:
    """{"mean", "std", "values"}: the sample standard deviation over seeds (0 for one seed)."""
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "values": values}


def fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f}±{stat['std']:.3f}"


def task_profiles(pi: Path, seeds: list, tasks: list) -> dict:
    """Per task, over the seeds: its Fisher mass (the embedding's sum) and its highest similarity to any
    other task (task_sim.csv). A task can stand apart in two ways: little mass (the foundation already
    fits it, so the little gradient left is noise) or a large mass pointing elsewhere (it needs
    different parameters)."""
    mass, closest = {t: [] for t in tasks}, {t: [] for t in tasks}
    for seed in seeds:
        with open(pi / f"s{seed}" / "task_sim.csv", newline="") as f:
            header, *matrix = list(csv.reader(f))
        for i, task in enumerate(header):
            if task in closest:
                closest[task].append(max(float(v) for j, v in enumerate(matrix[i]) if j != i))
        for task in tasks:
            emb, _ = load_task_embedding(pi / f"s{seed}" / "task_emb" / f"{task}.safetensors")
            mass[task].append(round(fisher_mass(emb), 4))
    return {t: {"fisher_mass": mean_std(mass[t]), "closest_other": mean_std(closest[t])} for t in tasks}


def main(pi: str, ckpt_root: str, target: str, n_low: str, rows: str, updates: str, durations: str, seeds: str,
         *sources: str) -> dict:
    pi, root, seeds = Path(pi), Path(ckpt_root), seeds.split()

    def acc(seed: str, name: str) -> float:
        return json.loads((pi / f"s{seed}" / "eval" / name / "summary.json").read_text())["acc@0.5"]

    per_seed, sims, top = {}, {v: [] for v in sources}, {}
    for seed in seeds:
        topk = json.loads((pi / f"s{seed}" / f"top_k_{target}.json").read_text())
        for v in sources:
            sims[v].append(topk["similarities"][v])
        top[seed] = [t["task"] for t in topk["top_k"]]
        meta = read_piece_file(str(root / f"pi_s{seed}_interpolation" / "pieces.safetensors"), tensors=False)[1]
        extra = meta.get("extra", {})
        per_seed[seed] = {
            "interpolation": acc(seed, "interpolation"), "collapsed": acc(seed, "collapsed"),
            "single_low_data_expert": acc(seed, "single"),
            "sources_on_target": {v: acc(seed, f"source_{v}") for v in sources},
            "interpolated_experts": [Path(e).stem for e in extra.get("expert_mix", {}).get("experts", [])],
            "learned_weights": [round(w, 4) for w in extra.get("mix_weights", [])],
        }
    foundation = json.loads((pi / "eval" / "foundation" / "summary.json").read_text())
    best = {seed: max(sources, key=lambda v: per_seed[seed]["sources_on_target"][v]) for seed in seeds}
    summary = {
        "target": target, "seeds": seeds, "test_rows": foundation["n"],
        "low_data_rows": int(n_low), "full_train_rows": int(rows), "updates_per_run": int(updates),
        "similarities": {v: mean_std(s) for v, s in sims.items()},
        "top_k_per_seed": top,
        "task_profiles": task_profiles(pi, seeds, list(sources) + [target]),
        "acc@0.5": {
            "interpolation": mean_std([per_seed[s]["interpolation"] for s in seeds]),
            "collapsed": mean_std([per_seed[s]["collapsed"] for s in seeds]),
            "single_low_data_expert": mean_std([per_seed[s]["single_low_data_expert"] for s in seeds]),
            "best_source": mean_std([per_seed[s]["sources_on_target"][best[s]] for s in seeds]),
            "sources_on_target": {v: mean_std([per_seed[s]["sources_on_target"][v] for s in seeds]) for v in sources},
            "foundation_no_tuning": foundation["acc@0.5"],
        },
        "interpolation_minus_single": mean_std(
            [round(per_seed[s]["interpolation"] - per_seed[s]["single_low_data_expert"], 4) for s in seeds]),
        "collapsed_equals_interpolation": all(per_seed[s]["collapsed"] == per_seed[s]["interpolation"] for s in seeds),
        "per_seed": per_seed,
        "durations_s": json.loads(durations),
    }
    (pi / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"demo: similarity {target}: " + " ".join(f"{v}={fmt(s)}" for v, s in summary["similarities"].items())
          + f" (top-{len(next(iter(top.values())))} per seed: {top})")
    a = summary["acc@0.5"]
    print(f"demo: interpolation acc@0.5={fmt(a['interpolation'])} single={fmt(a['single_low_data_expert'])} "
          f"best-source={fmt(a['best_source'])} foundation={a['foundation_no_tuning']:.3f} "
          f"(interpolation - single = {fmt(summary['interpolation_minus_single'])}; {len(seeds)} seeds, "
          f"{summary['test_rows']} test rows); collapsed = interpolation: {summary['collapsed_equals_interpolation']}")
    return summary


if __name__ == "__main__":
    main(*sys.argv[1:])
