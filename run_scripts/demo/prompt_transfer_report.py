"""Tables of the prompt-transfer demo stage (``prompt_transfer.sh``).

``--phase pick`` prints ``TARGET SOURCE`` per target: the source ranked first by the combined
estimate (``OUT/TARGET/scores.csv``). ``--phase final`` collects every run's ``report.json``
(best-epoch test accuracy, as the paper reports, and the validation-selected one), the rank
correlations of each estimator, writes ``OUT/summary.json`` and ``OUT/results.md`` and prints the
demo lines.
"""

import argparse
import csv
import json
import statistics
from pathlib import Path

MODES = ("frozen", "projection", "attention")


def _report(work: Path, run: str) -> dict:
    return json.loads((work / "runs" / run / "report.json").read_text())


def _mean_std(values):
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def pick(out: Path, targets):
    for t in targets:
        with open(out / t / "scores.csv") as f:
            rows = list(csv.DictReader(f))
        best = max(rows, key=lambda r: float(r["combined"]))
        print(t, best["source"].rsplit("_s", 1)[0])


def final(out: Path, work: Path, targets, final_targets, seeds):
    picked = dict(line.split() for line in (work / "picked.txt").read_text().splitlines() if line.strip())
    summary = {"note": "mechanics test on real offline assets (MiniLM, gensim text, digits, GunPoint); "
                       "derived source tasks; rank correlations over few sources are noisy", "targets": {}}
    md = ["# Prompt transfer miniature", "", summary["note"], ""]
    for t in targets:
        corr = json.loads((out / t / "summary.json").read_text())["correlations"]
        gt = {r["source"]: float(r["accuracy"]) for r in csv.DictReader(open(work / f"gt_{t}.csv"))}
        summary["targets"][t] = {"correlations": corr, "ground_truth_projection": gt}
        md += [f"## {t}: estimates against measured projection transfers (seed 42, best-epoch test acc)", "",
               "| source | measured acc |", "|---|---:|"] + [f"| {s} | {a:.2f} |" for s, a in gt.items()]
        md += ["", "| estimator | Kendall τ ×100 | Spearman ρ ×100 |", "|---|---:|---:|"]
        md += [f"| {e} | {c['kendall_tau']:.1f} | {c['spearman_rho']:.1f} |" for e, c in corr.items()]
        md.append("")
    for t in final_targets:
        corr = summary["targets"][t]["correlations"]
        src = picked[t]
        entry = summary["targets"][t]
        entry.update({"source": src, "modes": {}})
        for mode in MODES:
            reps = [_report(work, f"{t}_{src}_{mode}_s{s}") for s in seeds]
            entry["modes"][mode] = {k: _mean_std([r[k] for r in reps]) for k in ("best_epoch_test", "val_selected_test")}
        reps = [_report(work, f"tune_{t}_s{s}") for s in seeds]
        entry["xavier"] = {k: _mean_std([r[k] for r in reps]) for k in ("best_epoch_test", "val_selected_test")}
        md += [f"## {t}: the source ranked first by the combined estimate ({src}), over seeds {' '.join(seeds)}", "",
               "| prompt | best-epoch test acc | validation-selected test acc |", "|---|---:|---:|"]
        for name, rec in list(entry["modes"].items()) + [("xavier (target prompt, no transfer)", entry["xavier"])]:
            b, v = rec["best_epoch_test"], rec["val_selected_test"]
            md.append(f"| {name} | {b['mean']:.2f} ± {b['std']:.2f} | {v['mean']:.2f} ± {v['std']:.2f} |")
        md.append("")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text("\n".join(md) + "\n")
    first = summary["targets"][final_targets[0]]
    best = max(MODES, key=lambda m: first["modes"][m]["best_epoch_test"]["mean"])
    kendall = statistics.fmean(summary["targets"][t]["correlations"]["combined"]["kendall_tau"] for t in targets)
    for t in targets:
        taus = " ".join(f"{k}={v['kendall_tau'] / 100:.2f}" for k, v in summary["targets"][t]["correlations"].items())
        print(f"demo: prompt-transfer {t} kendall {taus}")
    for t in final_targets:
        e = summary["targets"][t]
        accs = " ".join(f"{m}={e['modes'][m]['best_epoch_test']['mean']:.1f}±{e['modes'][m]['best_epoch_test']['std']:.1f}"
                        for m in MODES)
        print(f"demo: prompt-transfer {t} source={e['source']} {accs} "
              f"xavier={e['xavier']['best_epoch_test']['mean']:.1f}±{e['xavier']['best_epoch_test']['std']:.1f}")
    print(f"demo: prompt-transfer best={best} acc={first['modes'][best]['best_epoch_test']['mean']:.1f} "
          f"xavier={first['xavier']['best_epoch_test']['mean']:.1f} kendall={kendall / 100:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("work")
    ap.add_argument("--sources", nargs="+", required=True)
    ap.add_argument("--targets", nargs="+", required=True)
    ap.add_argument("--final-targets", nargs="+", default=None, help="targets of the per-seed comparison (default: all)")
    ap.add_argument("--seeds", nargs="+", default=["42"])
    ap.add_argument("--phase", choices=("pick", "final"), required=True)
    args = ap.parse_args()
    if args.phase == "pick":
        pick(Path(args.out), args.targets)
    else:
        final(Path(args.out), Path(args.work), args.targets, args.final_targets or args.targets, args.seeds)


if __name__ == "__main__":
    main()
