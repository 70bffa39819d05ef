"""Grounding predictions: beam search → four location tokens → box in original pixels → IoU.

One implementation serves fairseq validation (`refcoco` task, `--eval-acc`) and `ofa-evaluate`.
"""

from dataclasses import dataclass

import torch

from ..data.boxes import tokens_to_boxes
from ..metrics.boxes import box_overlap, grounding_hits, true_iou
from .generation import generate_from_bos


@dataclass
class GroundingPredictions:
    tokens: torch.Tensor  # [B, 4] generated ids (eos removed)
    scores: torch.Tensor  # [B] beam score of the best hypothesis
    boxes: torch.Tensor  # [B, 4] x0, y0, x1, y1 in original-image pixels
    iou: torch.Tensor  # [B] OFA's formula (unclamped intersection: negative for disjoint boxes)
    hits: torch.Tensor  # [B] 1.0 where IoU >= 0.5 with a positive intersection, else 0.0
    true_iou: torch.Tensor  # [B] intersection over union in [0, 1] (what predictions.jsonl reports)


def predict_grounding(generator, models: list, sample: dict, dictionary, num_bins: int,
                      max_image_size: int) -> GroundingPredictions:
    """Decode the best hypothesis of every sample and score it against `region_coords`."""
    hypos = generate_from_bos(generator, models, sample, bos=dictionary.bos())
    tokens = torch.stack([h[0]["tokens"][:4] for h in hypos]).cpu()
    scores = torch.stack([h[0]["score"].reshape(()) for h in hypos]).float().cpu()
    boxes = tokens_to_boxes(tokens, sample["w_resize_ratios"].cpu(), sample["h_resize_ratios"].cpu(),
                            dictionary_size=len(dictionary), num_bins=num_bins, max_image_size=max_image_size)
    gold = sample["region_coords"].float().cpu()
    overlap = box_overlap(boxes, gold)
    return GroundingPredictions(tokens, scores, boxes, overlap.iou, grounding_hits(boxes, gold), true_iou(boxes, gold))
