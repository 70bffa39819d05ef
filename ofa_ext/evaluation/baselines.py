"""Trivial grounding baselines, to show how much of a score is learned rather than guessed.

* centre: a box of the training set's mean width and height (relative to the image), centred;
* largest: the largest object of the scene, when the scene's object boxes are known (the synthetic
  data writes them to `{split}.objects.jsonl`).

    python -m ofa_ext.evaluation.baselines DATA_DIR --split test     # prints a JSON object
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

from ..data.grounding_dataset import parse_region
from ..data.transforms import decode_image_b64
from ..data.tsv import TSVReader
from ..metrics.boxes import grounding_hits

# OFA's grounding columns: uniq_id, image_b64, text, region
COLS = (0, 4, 2, 3)


def read_boxes_and_sizes(tsv: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(ids, gold boxes [N,4], image sizes [N,2] as width, height) of a grounding TSV."""
    reader = TSVReader(tsv, selected_cols=list(COLS))
    ids, boxes, sizes = [], [], []
    for i in range(len(reader)):
        uniq_id, image_b64, _, region = reader[i]
        image = decode_image_b64(image_b64)
        ids.append(uniq_id)
        boxes.append(parse_region(region))
        sizes.append((image.width, image.height))
    return ids, torch.tensor(boxes, dtype=torch.float32), torch.tensor(sizes, dtype=torch.float32)


def centre_boxes(sizes: torch.Tensor, rel_wh: torch.Tensor) -> torch.Tensor:
    """Boxes of relative size `rel_wh` (w, h) centred in images of `sizes` (w, h)."""
    half = sizes * rel_wh / 2
    centre = sizes / 2
    return torch.cat([centre - half, centre + half], dim=1)


def largest_object_boxes(objects_file: Path, ids: list[str]) -> torch.Tensor:
    by_id = {}
    for line_no, line in enumerate(objects_file.read_text().splitlines(), 1):
        rec = json.loads(line)
        by_id[rec["id"]] = max(rec["boxes"], key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"{objects_file}: no objects for ids {missing[:5]}")
    return torch.tensor([by_id[i] for i in ids], dtype=torch.float32)


def baseline_scores(data_dir: Path, split: str = "test", train_split: str = "train") -> dict:
    """Acc@0.5 of the centre and (if object boxes exist) largest-object baselines on `split`."""
    _, train_boxes, train_sizes = read_boxes_and_sizes(data_dir / f"{train_split}.tsv")
    rel_wh = ((train_boxes[:, 2:] - train_boxes[:, :2]) / train_sizes).mean(0)
    ids, gold, sizes = read_boxes_and_sizes(data_dir / f"{split}.tsv")
    scores = {"split": split, "n": len(ids),
              "centre": float(grounding_hits(centre_boxes(sizes, rel_wh), gold).mean())}
    objects = data_dir / f"{split}.objects.jsonl"
    if objects.is_file():
        scores["largest"] = float(grounding_hits(largest_object_boxes(objects, ids), gold).mean())
    return scores


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="directory with train.tsv and {split}.tsv")
    p.add_argument("--split", default="test")
    args = p.parse_args(argv)
    print(json.dumps(baseline_scores(Path(args.data), args.split)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
