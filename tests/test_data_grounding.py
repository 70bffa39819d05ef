"""GroundingDataset against OFA's official refcoco pipeline outputs, plus bad-input handling."""

import base64
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_ext.data.boxes import bins_to_token_ids, quantise_box, tokens_to_boxes
from ofa_ext.data.grounding_dataset import GROUNDING_PROMPT, GroundingDataset
from ofa_ext.data.synthetic import make_grounding_splits
from ofa_ext.data.text import build_text_encoder, train_sentencepiece
from ofa_ext.data.tsv import BadRowError

DATA = Path(__file__).resolve().parent / "data"  # copies of the official references; missing = failure
REF = DATA / "refcoco_reference"
BPE_DIR = DATA / "ofa_bpe"


@pytest.fixture(scope="module")
def gpt2():
    return build_text_encoder("gpt2", bpe_dir=BPE_DIR)


@pytest.fixture(scope="module")
def official(gpt2):
    d, enc = gpt2
    ds = GroundingDataset.from_tsv(REF / "refcoco_rows.tsv", d, enc, patch_image_size=512, max_image_size=512,
                                   num_bins=1000)
    return ds, ds.collater([ds[i] for i in range(len(ds))]), np.load(REF / "pipeline.npz")


def test_batch_is_bit_exact(official):
    _, batch, ref = official
    ni = batch["net_input"]
    assert sorted(batch) == ["h_resize_ratios", "id", "net_input", "nsentences", "ntokens", "region_coords",
                             "target", "text", "w_resize_ratios"]
    assert sorted(ni) == ["patch_images", "patch_masks", "prev_output_tokens", "src_lengths", "src_tokens"]
    for name, got in [("src_tokens", ni["src_tokens"]), ("src_lengths", ni["src_lengths"]),
                      ("prev_output_tokens", ni["prev_output_tokens"]), ("patch_masks", ni["patch_masks"]),
                      ("target", batch["target"]), ("w_resize_ratios", batch["w_resize_ratios"]),
                      ("h_resize_ratios", batch["h_resize_ratios"]), ("region_coords", batch["region_coords"])]:
        assert got.numpy().dtype == ref[name].dtype, name
        np.testing.assert_array_equal(got.numpy(), ref[name], err_msg=name)
    np.testing.assert_array_equal(batch["id"], ref["ids"])
    assert batch["nsentences"] == 4 and batch["ntokens"] == 20
    assert tuple(ni["patch_images"].shape) == (4, 3, 512, 512) and ni["patch_images"].dtype == torch.float32


def test_patch_images_are_bit_exact(official):
    _, batch, ref = official
    images = batch["net_input"]["patch_images"].numpy()
    for i, uid in enumerate(ref["ids"]):
        assert hashlib.sha256(images[i].astype("<f4").tobytes()).hexdigest() == ref["patch_image_sha256"][i], uid
        if f"patch_image.{uid}" in ref:
            np.testing.assert_array_equal(images[i], ref[f"patch_image.{uid}"])


def test_quantisation_values(official):
    ds, batch, ref = official
    for i in range(4):
        w, h = (int(v) for v in ref["orig_size_wh"][i])
        q = quantise_box(ref["region_coords"][i], w, h, 512, 512, 1000)
        np.testing.assert_allclose(q.normalised.numpy(), ref["box_over_max_image_size"][i], rtol=1e-6)
        np.testing.assert_allclose(q.quant_float.numpy(), ref["quant_float"][i], rtol=1e-6)
        assert bins_to_token_ids(q.bins, len(ds.dictionary)).tolist() == ref["target"][i, :4].tolist()
    # dequantising the targets lands within half a bin of the gold box
    boxes = tokens_to_boxes(batch["target"], batch["w_resize_ratios"], batch["h_resize_ratios"], len(ds.dictionary))
    half_bin = 512 / 999 / 2 / torch.stack([batch["w_resize_ratios"], batch["h_resize_ratios"]] * 2, 1)
    assert torch.all((boxes - batch["region_coords"]).abs() <= half_bin + 1e-4)


def test_rounding_halves_to_even_and_range():
    # with num_bins - 1 == max_image_size the quantised value is the pixel value itself, so exact halves occur
    q = quantise_box([2.5, 3.5, 100.5, 511.0], 512, 512, 512, 512, num_bins=513)
    assert q.quant_float.tolist() == [2.5, 3.5, 100.5, 511.0] and q.bins.tolist() == [2, 4, 100, 511]
    q2 = quantise_box([0.0, 0.0, 16.0, 32.0], 32, 32, 32, 512, 1000)  # π-Tuning-style s < M: bins stop early
    assert q2.bins.tolist() == [0, 0, round(16 / 512 * 999), round(32 / 512 * 999)] == [0, 0, 31, 62]
    with pytest.raises(ValueError, match="outside"):
        bins_to_token_ids(torch.tensor([0, 1000]), 59457)
    t = torch.tensor([[4, 5, 6, 7]])  # ids, not bins: decoded anyway, without clipping
    assert tokens_to_boxes(t, [1.0], [1.0], 59457)[0, 0] < 0


def _rows_tsv(path, rows):
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return make_grounding_splits(out, "refcoco", seed=3, n_train=24, n_valid=4, n_test=4, image_size=64)


def _good_row(synth):
    return (synth["valid"]).read_text().splitlines()[0].split("\t")


def test_synthetic_rows_load_and_sizes(gpt2, synth):
    d, enc = gpt2
    ds = GroundingDataset.from_tsv(synth["train"], d, enc, patch_image_size=64)
    item = ds[0]
    assert item["patch_image"].shape == (3, 64, 64) and item["target"].shape == (5,)
    assert item["target"][-1] == d.eos() and item["prev_output_tokens"][0] == d.bos()
    assert torch.equal(item["target"][:4], item["prev_output_tokens"][1:])
    assert ds.sizes.tolist() == [len(ds[i]["source"]) for i in range(len(ds))]
    assert ds.num_tokens_vec(np.arange(3)).tolist() == [max(5, len(ds[i]["source"])) for i in range(3)]
    assert ds.size(0) == (len(item["source"]), 5)
    batches = ds.batch_by_size(ds.ordered_indices(), max_sentences=5)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 4]
    shuffled = GroundingDataset.from_tsv(synth["train"], d, enc, patch_image_size=64, shuffle=True, seed=2)
    shuffled.set_epoch(2)
    order = shuffled.ordered_indices()
    assert sorted(order.tolist()) == list(range(24)) and order.tolist() != list(range(24))
    parts = [ds.slice_for_rank(r, 5) for r in range(5)]
    assert [p[0]["id"] for p in parts] == [ds[i]["id"] for i in (0, 5, 10, 15, 20)]


@pytest.mark.parametrize(
    "column,value,message",
    [
        (4, "!!!not-base64!!!", "could not be decoded|not valid base64"),
        (4, base64.b64encode(b"not an image").decode(), "could not be decoded by PIL"),
        (3, "10,10,5,20", "empty or reversed"),
        (3, "10,10,500,20", "outside the 64x64 image"),
        (3, "1,2,3", "x0,y0,x1,y1"),
        (3, "a,b,c,d", "four numbers"),
        (2, ".,; ", "text is empty"),
    ],
)
def test_bad_rows_name_file_line_and_id(gpt2, synth, tmp_path, column, value, message):
    d, enc = gpt2
    good = _good_row(synth)
    bad = list(good)
    bad[0] = "bad_1"
    bad[column] = value
    path = _rows_tsv(tmp_path / "bad.tsv", [good, bad, good])
    ds = GroundingDataset.from_tsv(path, d, enc, patch_image_size=64)
    with pytest.raises(BadRowError, match=rf"bad\.tsv:2 \(uniq_id 'bad_1'\): .*({message})"):
        ds[1]
    skipping = GroundingDataset.from_tsv(path, d, enc, patch_image_size=64, skip_bad_rows=True)
    batch = skipping.collater([skipping[i] for i in range(3)])
    assert batch["nsentences"] == 2 and skipping.num_skipped == 1
    assert skipping.collater([skipping[1]]) == {}


def test_wrong_column_count(gpt2, synth, tmp_path):
    d, enc = gpt2
    good = _good_row(synth)
    path = _rows_tsv(tmp_path / "cols.tsv", [good, good[:4]])
    with pytest.raises(BadRowError, match=r"cols\.tsv:2: expected 5"):
        GroundingDataset.from_tsv(path, d, enc)
    assert len(GroundingDataset.from_tsv(path, d, enc, skip_bad_rows=True)) == 1


def test_errors_from_dataloader_workers_keep_context(gpt2, synth, tmp_path):
    d, enc = gpt2
    good = _good_row(synth)
    bad = list(good)
    bad[0], bad[4] = "w_bad", "@@@@"
    path = _rows_tsv(tmp_path / "w.tsv", [good, good, bad, good])
    ds = GroundingDataset.from_tsv(path, d, enc, patch_image_size=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=ds.collater)
    batches = iter(loader)
    try:
        with pytest.raises(Exception, match=r"w\.tsv:3 \(uniq_id 'w_bad'\)"):
            for _ in batches:
                pass
    finally:
        batches._shutdown_workers()  # do not leave the workers to a later garbage collection


def test_sentencepiece_dataset_uses_same_tail(synth, tmp_path):
    texts = [GROUNDING_PROMPT.format(line.split("\t")[2]) for line in synth["train"].read_text().splitlines()]
    model = train_sentencepiece(texts * 4, tmp_path, vocab_size=60)
    d, enc = build_text_encoder("sentencepiece", spm_model=model, num_bins=100, code_dict_size=0)
    ds = GroundingDataset.from_tsv(synth["valid"], d, enc, patch_image_size=64, max_image_size=64, num_bins=100)
    item = ds[0]
    assert all(len(d) - 100 <= int(t) < len(d) for t in item["target"][:4])
    assert d.unk() not in item["source"][1:-1].tolist()
