"""Why the demo's task similarities rank as they do: each task's Fisher mass, its encoder share,
and the target similarity on encoder and decoder tensors apart, per seed.

    python run_scripts/demo/fisher_anatomy.py results/demo/pi_tuning   # -> fisher_anatomy.md there
"""

import sys
from pathlib import Path

import torch

from ofa_ext.metrics.fisher import fisher_mass, load_task_embedding
from ofa_ext.metrics.similarity import tensor_similarity


def seed_rows(folder: Path, target: str, sources: list) -> list:
    emb = {t: load_task_embedding(folder / f"{t}.safetensors")[0] for t in sources + [target]}
    rows = []
    for task in sources + [target]:
        total, enc = fisher_mass(emb[task]), fisher_mass(emb[task], "encoder.")
        sims = {}
        for part in ("encoder.", "decoder."):
            keys = [k for k in emb[target] if k.startswith(part)]
            sims[part] = sum(tensor_similarity(emb[task][k], emb[target][k]) for k in keys) / len(keys)
        rows.append((task, total, enc / total, sims["encoder."], sims["decoder."]))
    return rows


def main(pi_dir: str, target: str = "refcocog", sources: str = "refcoco,refcoco+,largest,region") -> None:
    pi, names = Path(pi_dir), sources.split(",")
    lines = ["# Anatomy of the task embeddings (`fisher_anatomy.py`)", "",
             "Fisher mass = sum of the diagonal Fisher over the expert's adapter parameters; similarity to the "
             f"target `{target}` as π-Tuning computes it, on encoder and decoder tensors separately.", "",
             "| seed | task | Fisher mass | encoder share | sim. (encoder) | sim. (decoder) |", "|---|---|---|---|---|---|"]
    for seed_dir in sorted(pi.glob("s*/task_emb")):
        for task, total, share, se, sd in seed_rows(seed_dir, target, names):
            lines.append(f"| {seed_dir.parent.name} | {task} | {total:.3g} | {share:.2f} | {se:.3f} | {sd:.3f} |")
    (pi / "fisher_anatomy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
