"""OFA's IoU / Acc@0.5 on hand-computed boxes and on the official evaluation outputs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_ext.data.boxes import tokens_to_boxes
from ofa_ext.metrics.boxes import box_iou, box_overlap, grounding_hits

REF = Path(__file__).resolve().parent / "data" / "refcoco_reference"  # missing = failure


def test_hand_computed_cases():
    pred = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 4, 10], [10, 0, 20, 10]],
                        dtype=torch.float32)
    gold = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 20, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]],
                        dtype=torch.float32)
    iou, iw, ih = box_overlap(pred, gold)
    expected = [100 / (100 + 1e-6), 50 / 150, 100 / 200, (-10 * -10) / (100 + 100 - 100), 40 / 100, 0.0]
    np.testing.assert_allclose(iou.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert iw.tolist() == [10, 5, 10, -10, 4, 0] and ih.tolist() == [10, 10, 10, -10, 10, 10]
    # the disjoint pair has "IoU" 1 from two negative sides, but is no hit; in float32 the 1e-6 vanishes
    # next to 200, so 100/200 is exactly 0.5 and counts
    assert grounding_hits(pred, gold).tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert grounding_hits(pred.double(), gold.double()).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_numpy_inputs_and_shape_errors():
    p = np.array([[1.0, 2.0, 5.0, 6.0]])
    assert torch.allclose(box_iou(p, p), torch.tensor([16 / (16 + 1e-6)], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_iou(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same shape"):
        box_iou(np.zeros((2, 4)), np.zeros((3, 4)))


@pytest.mark.parametrize("prefix", ["eval", "gold_decode"])
def test_official_decode_and_metric(prefix):
    e = np.load(REF / "eval.npz")
    p = np.load(REF / "pipeline.npz")
    boxes = tokens_to_boxes(e[f"{prefix}.tokens"], p["w_resize_ratios"], p["h_resize_ratios"], dictionary_size=59457)
    assert boxes.dtype == torch.float32
    np.testing.assert_array_equal(boxes.numpy(), e[f"{prefix}.boxes"])
    iou, iw, ih = box_overlap(boxes, torch.from_numpy(p["region_coords"]))
    np.testing.assert_allclose(iou.numpy(), e[f"{prefix}.iou"], rtol=1e-5)
    np.testing.assert_allclose(iw.numpy(), e[f"{prefix}.inter_w"], rtol=1e-5)
    np.testing.assert_allclose(ih.numpy(), e[f"{prefix}.inter_h"], rtol=1e-5)
    np.testing.assert_array_equal(grounding_hits(boxes, p["region_coords"]).numpy(), e[f"{prefix}.hits"])
