"""``ofa-make-grounding-data``: write synthetic grounding TSVs (train/valid/test) for demos and tests.

Example::

    ofa-make-grounding-data --variant refcoco --out data/synth_refcoco --seed 1
    fairseq-train data/synth_refcoco/train.tsv,data/synth_refcoco/valid.tsv --user-dir ofa_ext \
        --task refcoco --selected-cols 0,4,2,3 ...
"""

from __future__ import annotations

import argparse
import json
import time
from typing import List, Optional

from ofa_ext.data.synthetic import VARIANTS, make_grounding_splits
from ofa_ext.utils.errors import cli_entry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofa-make-grounding-data", description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=VARIANTS, default="refcoco",
                   help="refcoco: colour+shape+position words; refcoco+: appearance only; "
                        "refcocog: full sentences with relations; largest: generic 'the largest object'; "
                        "region: a named part of the image ('the top left quarter'), whatever is drawn")
    p.add_argument("--out", required=True, help="output folder (created); gets train.tsv, valid.tsv, test.tsv")
    p.add_argument("--seed", type=int, default=1, help="same seed, same files")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-valid", type=int, default=200)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--image-size", type=int, default=96, help="square image side in pixels (>= 32)")
    p.add_argument("--image-format", choices=("JPEG", "PNG"), default="JPEG")
    return p


@cli_entry("ofa-make-grounding-data")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    paths = make_grounding_splits(args.out, args.variant, args.seed, args.n_train, args.n_valid, args.n_test,
                                  args.image_size, args.image_format)
    print(json.dumps({"variant": args.variant, "seed": args.seed, "files": {k: str(v) for k, v in paths.items()},
                      "seconds": round(time.perf_counter() - start, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
