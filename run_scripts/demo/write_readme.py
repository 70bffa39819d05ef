"""Write OUT/README.md, the record of one demo run, from the stages' summaries (nothing typed by hand).

Usage: python run_scripts/demo/write_readme.py OUT STAGE_SECONDS_JSON
"""

import datetime
import json
import os
import sys
from pathlib import Path


def pm(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def verdict(diff: dict) -> str:
    """Whether a mean difference over seeds stands out of its seed-to-seed spread."""
    if len(diff["values"]) < 2:
        return "one seed: no spread to compare with"
    if diff["std"] == 0:
        return "the same in every seed"
    ratio = abs(diff["mean"]) / diff["std"]
    return f"{ratio:.1f} standard deviations from 0 over {len(diff['values'])} seeds"


def main(out: str, stage_seconds: str) -> None:
    out, secs = Path(out), json.loads(stage_seconds)
    g = json.loads((out / "grounding" / "summary.json").read_text())
    base = json.loads((out / "grounding" / "baselines.json").read_text())
    petl = json.loads((out / "petl" / "petl.json").read_text())
    pi = json.loads((out / "pi_tuning" / "summary.json").read_text())
    zero = json.loads((out / "petl" / "foundation_zero_shot" / "summary.json").read_text())["acc@0.5"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    total = sum(secs.values())
    lines = [
        "# `make demo`: one recorded run", "",
        f"Written by `run_scripts/demo/write_readme.py` at the end of `bash run_scripts/demo/demo.sh` on "
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end, one thread "
        f"per process: {total // 60:.0f} min {total % 60:.0f} s in total ("
        + ", ".join(f"{k} {v // 60:.0f} min {v % 60:.0f} s" for k, v in secs.items()) + "). Generated data, the "
        "`ofa_nano` arch; data and checkpoints stay in `work/` (not in git).", "",
        "## Stage 1: grounding (`grounding/`)",
        f"Trained from scratch on `refcoco`, evaluated on {g['n']} test rows.", "",
        "| | Acc@0.5 |", "|---|---|",
        f"| ofa_nano | **{g['acc@0.5']:.3f}** |",
        f"| centre box | {base['centre']:.3f} |",
        f"| largest object of the scene | {base['largest']:.3f} |", "",
        f"Against the largest-object heuristic: {g['acc@0.5'] - base['largest']:+.3f}.", "",
        "## Stage 2: PETL from the stage-1 model (`petl/petl.json`)",
        "Acc@0.5 is the mean ± standard deviation over the seeds (per seed in `petl.json`); step time = "
        f"forward + backward + Adam step on one batch, single-thread CPU time. The foundation without tuning "
        f"scores {zero:.3f}.", "",
        "| method | Acc@0.5 | test rows | trainable | file | step / full |", "|---|---|---|---|---|---|",
    ]
    for m, r in petl.items():
        lines.append(f"| {m} | {r['acc@0.5']:.3f} ± {r['acc@0.5_std']:.3f} | {r['test_rows']} | "
                     f"{r['trainable_percent']:.2f} % | {r['file_kb']:.0f} KB ({r['file']}) | {r['step_vs_full']} |")
    a = pi["acc@0.5"]
    lines += [
        "", f"## Stage 3: π-Tuning on `{pi['target']}` (`pi_tuning/summary.json`)",
        f"Seeds {', '.join(pi['seeds'])}; the target has {pi['low_data_rows']} of its {pi['full_train_rows']} training "
        f"rows; {pi['updates_per_run']} updates per run; {pi['test_rows']} test rows.", "",
        "Similarity of the target to each source task (Fisher embeddings, mean ± std over seeds):", "",
        "| source | similarity |", "|---|---|",
        *[f"| {v} | {pm(s)} |" for v, s in pi["similarities"].items()], "",
        f"Top-{len(next(iter(pi['top_k_per_seed'].values())))} per seed: "
        + "; ".join(f"seed {s}: {', '.join(t)}" for s, t in pi["top_k_per_seed"].items()) + ".", "",
        "Each task's Fisher mass (the embedding's sum) and its highest similarity to any other task: "
        "a task stands apart with little mass (the foundation already fits it) or with a large mass "
        "pointing at other parameters.", "",
        "| task | Fisher mass | highest similarity to another task |", "|---|---|---|",
        *[f"| {t} | {p['fisher_mass']['mean']:.3g} ± {p['fisher_mass']['std']:.2g} | {pm(p['closest_other'])} |"
          for t, p in pi["task_profiles"].items()], "",
        "| model on the target | Acc@0.5 |", "|---|---|",
        f"| interpolation (target expert + top-k sources) | **{pm(a['interpolation'])}** |",
        f"| its collapsed piece file | {pm(a['collapsed'])} |",
        f"| target expert alone (low data) | {pm(a['single_low_data_expert'])} |",
        f"| best source expert used directly | {pm(a['best_source'])} |",
        *[f"| source `{v}` used directly | {pm(s)} |" for v, s in a["sources_on_target"].items()],
        f"| foundation, no tuning | {a['foundation_no_tuning']:.3f} |", "",
        f"Interpolation − single expert: {pm(pi['interpolation_minus_single'])} "
        f"({verdict(pi['interpolation_minus_single'])}). Collapsed = interpolation in every seed: "
        f"{pi['collapsed_equals_interpolation']}.", "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    print(f"demo: wrote {out / 'README.md'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
