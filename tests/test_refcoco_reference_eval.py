"""Our beam search + box decoding reproduce OFA's official refcoco evaluation (tests/data/refcoco_reference).

The reference model has random weights, so the predictions are nonsense text tokens; what matters is
that every beam, score and decoded box equals the official run (unconstrained decoding, beam 5,
exactly 4 tokens, no-repeat-ngram 3, as `evaluate_refcoco.sh`).
"""

import numpy as np
import pytest
import torch

from ofa_ext.evaluation.generation import build_generator, generate_from_bos
from ofa_ext.evaluation.grounding import predict_grounding
from ofa_ext.api import load_official_checkpoint
from ofa_ext.tasks.refcoco import RefcocoConfig, RefcocoTask

OFFICIAL_GEN = {"beam": 5, "min_len": 4, "max_len_a": 0, "max_len_b": 4, "no_repeat_ngram_size": 3}


@pytest.fixture(scope="module")
def reference_run(reference_dir, reference_checkpoint):
    ref = reference_dir / "refcoco_reference"
    cfg = RefcocoConfig(data=str(ref / "refcoco_rows.tsv"), bpe_dir=str(reference_dir / "ofa_bpe"),
                        selected_cols="0,4,2,3", patch_image_size=512, max_image_size=512,
                        unconstrained_decoding=True)
    task = RefcocoTask.setup_task(cfg)
    model, _ = load_official_checkpoint(str(reference_checkpoint), task=task)
    task.load_dataset("refcoco_val")
    ds = task.dataset("refcoco_val")
    batch = ds.collater([ds[i] for i in range(len(ds))])
    return task, model, batch, np.load(ref / "eval.npz")


def test_beams_and_scores_equal_official(reference_run):
    task, model, batch, ref = reference_run
    generator = task.build_grounding_generator([model], OFFICIAL_GEN)
    with torch.no_grad():
        hypos = generate_from_bos(generator, [model], batch)
    beam_tokens = torch.stack([torch.stack([h["tokens"] for h in hs]) for hs in hypos])
    beam_scores = torch.stack([torch.stack([h["score"] for h in hs]) for hs in hypos])
    positional = torch.stack([torch.stack([h["positional_scores"] for h in hs]) for hs in hypos])
    np.testing.assert_array_equal(beam_tokens.numpy(), ref["eval.beam_tokens"])
    np.testing.assert_allclose(beam_scores.numpy(), ref["eval.beam_scores"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(positional.numpy(), ref["eval.beam_positional_scores"], atol=1e-4, rtol=0)


def test_boxes_iou_hits_equal_official(reference_run):
    task, model, batch, ref = reference_run
    generator = task.build_grounding_generator([model], OFFICIAL_GEN)
    with torch.no_grad():
        pred = predict_grounding(generator, [model], batch, task.dictionary, 1000, 512)
    np.testing.assert_array_equal(pred.tokens.numpy(), ref["eval.tokens"][:, :4])
    np.testing.assert_array_equal(pred.boxes.numpy(), ref["eval.boxes"])
    np.testing.assert_allclose(pred.iou.numpy(), ref["eval.iou"], rtol=1e-5)
    np.testing.assert_array_equal(pred.hits.numpy(), ref["eval.hits"])


def test_constrained_decoding_always_yields_four_bins(reference_run):
    task, model, batch, _ = reference_run
    start, end = task.bin_range()
    generator = build_generator([model], task.dictionary, OFFICIAL_GEN, constraint=(start, end))
    with torch.no_grad():
        hypos = generate_from_bos(generator, [model], batch)
    for hs in hypos:
        for h in hs:
            tokens = h["tokens"]
            assert tokens.numel() == 5 and int(tokens[-1]) == task.dictionary.eos()
            assert bool(((tokens[:4] >= start) & (tokens[:4] < end)).all()), tokens
