"""Grounding data pipeline throughput (samples/s) with 0 and 2 DataLoader workers.

Generates a synthetic set, then times full epochs of TSV read → base64/JPEG decode → resize →
normalise → BPE → collate. Prints a JSON object on the last line.

    python benchmarks/bench_data.py [--n 512 --image-size 128 --patch-size 128 --batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ofa_ext.data.grounding_dataset import GroundingDataset
from ofa_ext.data.synthetic import make_grounding_splits
from ofa_ext.data.text import build_text_encoder

DEFAULT_BPE = Path(__file__).resolve().parents[2] / "shared" / "ofa_bpe"


def time_epoch(ds: GroundingDataset, workers: int, batch_size: int, repeats: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=ds.collater,
                                         persistent_workers=workers > 0)
    for _ in loader:  # warm-up epoch (worker start, BPE cache, file index)
        pass
    start = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for batch in loader:
            n += batch["nsentences"]
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--bpe-dir", default=str(DEFAULT_BPE))
    args = p.parse_args()
    torch.set_num_threads(1)
    dictionary, encoder = build_text_encoder("gpt2", bpe_dir=args.bpe_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_grounding_splits(tmp, "refcoco", seed=0, n_train=args.n, n_valid=0, n_test=0,
                                      image_size=args.image_size)
        gen_rows_per_s = args.n / (time.perf_counter() - t0)
        ds = GroundingDataset.from_tsv(paths["train"], dictionary, encoder, patch_image_size=args.patch_size)
        result = {
            "benchmark": "data_pipeline",
            "rows": args.n, "image_size": args.image_size, "patch_image_size": args.patch_size,
            "batch_size": args.batch_size,
            "generate_rows_per_s": round(gen_rows_per_s, 1),
            "samples_per_s_workers0": round(time_epoch(ds, 0, args.batch_size, args.repeats), 1),
            "samples_per_s_workers2": round(time_epoch(ds, 2, args.batch_size, args.repeats), 1),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }
    result["speedup_workers2"] = round(result["samples_per_s_workers2"] / result["samples_per_s_workers0"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
