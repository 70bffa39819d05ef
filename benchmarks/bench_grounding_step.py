"""Grounding training step of the small arch (the demo's setting), and the data share of it.

    python benchmarks/bench_grounding_step.py [--image-size 64] [--batch 32] [--steps 10]

On generated refcoco data with the `refcoco` task and OFA's criterion, times (median of --steps,
after one warm-up) one full train step through `task.train_step` (forward, loss, backward) plus an
Adam step, and, alternately in the same loop, building the next batch from the TSV. Prints a JSON
object on the last line: step_ms, batch_ms, data_share = batch / (batch + step), samples_per_s.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import ofa_ext  # noqa: F401
from ofa_ext.cli.train_spm import main as train_spm
from ofa_ext.criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy
from ofa_ext.data.synthetic import make_grounding_splits
from ofa_ext.models.registered import OFAFairseqModel, fill_arch_defaults, to_ofa_config
from ofa_ext.tasks.refcoco import RefcocoConfig, RefcocoTask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        make_grounding_splits(data, "refcoco", seed=1, n_train=args.batch * (args.steps + 2), n_valid=0, n_test=0,
                              image_size=args.image_size)
        train_spm([str(data / "train.tsv"), "--out", str(data), "--vocab-size", "100"])
        task = RefcocoTask.setup_task(RefcocoConfig(
            data=str(data), bpe="sentencepiece", spm_model=str(data / "spm.model"), code_dict_size=0, num_bins=100,
            patch_image_size=args.image_size, max_image_size=args.image_size))
        task.load_dataset("train")
        ds = task.dataset("train")
        model_cfg = to_ofa_config(fill_arch_defaults({"_name": "ofa_nano"}, "ofa_nano"))
        model = OFAFairseqModel.build_model(model_cfg, task).train()
        criterion = AdjustLabelSmoothedCrossEntropy(task, label_smoothing=0.1)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def next_batch(i):
            return ds.collater([ds[j] for j in range(i * args.batch, (i + 1) * args.batch)])

        step_times, batch_times = [], []
        for i in range(args.steps + 1):
            t0 = time.perf_counter()
            batch = next_batch(i)
            t1 = time.perf_counter()
            loss, _, _ = criterion(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if i:
                batch_times.append(t1 - t0)
                step_times.append(t2 - t1)
    step, batch = statistics.median(step_times), statistics.median(batch_times)
    result = {"arch": "ofa_nano", "image_size": args.image_size, "batch": args.batch, "threads": args.threads,
              "params": sum(p.numel() for p in model.parameters()),
              "step_ms": round(1000 * step, 1), "batch_ms": round(1000 * batch, 1),
              "data_share": round(batch / (batch + step), 3), "samples_per_s": round(args.batch / (step + batch), 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
