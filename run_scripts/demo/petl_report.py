"""Summarise the demo's PETL stage: Acc@0.5 (mean ± std over seeds), trainable share, piece-file
size, train-step time.

Step times are measured here, side by side on the same batch (5 interleaved rounds, median CPU time
of one thread, so that other jobs on the machine barely move them), with each method's own
checkpoint: forward + backward + Adam step over its trainable parameters. The file size of full
fine-tuning is its fp32 weights (what a PETL piece file replaces).
Usage: python run_scripts/demo/petl_report.py OUT_DIR CKPT_ROOT TARGET_DATA "SEED ..." METHOD...
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ofa_ext.utils.checkpoints import load_fairseq_checkpoint
from ofa_ext.models.petl import trainable_summary


def train_step_seconds(models: dict, batch: dict, criterion_fn, rounds: int = 5) -> dict:
    optimizers = {m: torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.0)
                  for m, model in models.items()}
    times = {m: [] for m in models}
    for _ in range(rounds + 1):  # the first round warms up
        for m, model in models.items():
            start = time.process_time()
            loss = criterion_fn(model, batch)
            loss.backward()
            optimizers[m].step()
            optimizers[m].zero_grad(set_to_none=True)
            times[m].append(time.process_time() - start)
    return {m: statistics.median(t[1:]) for m, t in times.items()}


def mean_std(values: list) -> tuple:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(out_dir: str, ckpt_root: str, data: str, seeds: str, *methods: str) -> None:
    out, root, seeds = Path(out_dir), Path(ckpt_root), seeds.split()
    torch.set_num_threads(1)
    models, task, criterion = {}, None, None
    for m in methods:
        model, cfg, task = load_fairseq_checkpoint(str(root / f"petl_{m}_s{seeds[0]}" / "checkpoint_best.pt"), {"data": data})
        models[m] = model.train()
        criterion = criterion or task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    ds = task.dataset("train")
    batch = ds.collater([ds[i] for i in range(min(32, len(ds)))])
    step = train_step_seconds(models, batch, lambda model, b: criterion(model, b)[0])
    rows = {}
    for m in methods:
        summaries = [json.loads((out / m / f"s{seed}" / "summary.json").read_text()) for seed in seeds]
        acc, std = mean_std([s["acc@0.5"] for s in summaries])
        share = trainable_summary(models[m])
        pieces = out / f"{m}.safetensors"
        weights_bytes = sum(p.numel() * p.element_size() for p in models[m].parameters())
        rows[m] = {
            "acc@0.5": round(acc, 4), "acc@0.5_std": round(std, 4),
            "acc@0.5_per_seed": {seed: s["acc@0.5"] for seed, s in zip(seeds, summaries)},
            "test_rows": summaries[0]["n"], "trainable": share["trainable"],
            "trainable_percent": round(share["percent"], 3),
            "file_kb": round((pieces.stat().st_size if pieces.is_file() else weights_bytes) / 1024, 1),
            "file": "pieces" if pieces.is_file() else "fp32 weights",
            "step_ms": round(1000 * step[m], 1), "step_vs_full": round(step[m] / step["full"], 3) if "full" in step else None,
        }
    (out / "petl.json").write_text(json.dumps(rows, indent=2) + "\n")
    for m, r in rows.items():
        print(f"demo: petl {m} acc@0.5={r['acc@0.5']:.3f}±{r['acc@0.5_std']:.3f} ({len(seeds)} seeds, "
              f"{r['test_rows']} rows) trainable={r['trainable_percent']:.2f}% "
              f"file={r['file_kb']:.0f}KB step={r['step_ms']:.0f}ms ({r['step_vs_full']}x full)")


if __name__ == "__main__":
    main(*sys.argv[1:])
