"""Cross-modal few-shot adaptation: templates, CoOp crops, feature extraction and its cache, few-shot
draws, two-stream batches, heads (each against an independent computation), and the bad inputs."""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ofa_ext.cli.extract_features import build_parser, run
from ofa_ext.data.features import FeatureCacheError, few_shot_rows, read_table
from ofa_ext.data.features_dataset import split_batch, two_stream_batches
from ofa_ext.data.xmodal_sources import CLIP_MEAN_STD, CoOpTransform, SampleSourceError, read_split
from ofa_ext.data.xmodal_templates import class_texts, templates
from ofa_ext.models.crossmodal.adaptation import XModalHead, XModalHeadConfig, zeroshot_weights
from tests.xmodal_helpers import image_folders, tiny_clip_folder, write_features


def test_templates_and_class_texts():
    assert templates("classname") == ["{}"] and templates("vanilla") == ["a photo of a {}."]
    assert len(templates("hand_crafted", "imagenet")) == 7 and templates("hand_crafted", "dtd") == ["{} texture."]
    texts, labels, ids = class_texts(["golden_retriever", "cat"], ["a {}.", "{}!"])
    assert texts == ["a golden retriever.", "golden retriever!", "a cat.", "cat!"]
    assert labels == [0, 0, 1, 1] and ids == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="--dataset-name"):
        templates("hand_crafted")


def test_coop_crop_is_shorter_side_resize_then_centre_crop():
    arr = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)  # H=30, W=50
    image = Image.fromarray(arr)
    x = CoOpTransform(12, ("center", "flip"))(image)
    assert x.shape == (2, 3, 12, 12)
    resized = np.asarray(image.resize((20, 12), Image.BICUBIC), dtype=np.float32) / 255  # 50*12/30 = 20
    crop = resized[:, 4:16]  # (20 - 12) // 2 = 4
    mean, std = (np.array(v, dtype=np.float32) for v in CLIP_MEAN_STD)
    expected = torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1).copy())
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(x[1], expected.flip(-1), rtol=0, atol=0)


def _args(tmp_path, data, clip, **kw):
    argv = ["--body", f"hf:{clip}", "--data", str(data), "--classnames", str(data / "classes.txt"),
            "--out", str(tmp_path / "feats"), "--templates", "vanilla", "--batch-size", "4"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def clip_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("xmodal")
    return tiny_clip_folder(root), image_folders(root / "images")


def test_extraction_equals_clip_features_and_is_cached(clip_and_images, tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    clip, data = clip_and_images
    report = run(_args(tmp_path, data, clip))
    assert not any(r["cached"] for r in report.values())
    train = read_table(tmp_path / "feats" / "train.image.safetensors")
    h = train.header
    assert (h["body"], h["layer"], h["split"], h["views"]) == (f"hf:{clip}", 0, "train", ["center", "flip"])
    assert h["n_samples"] == 9 and h["rows"] == 18 and len(train) == 18  # every sample, both views
    assert train.view.tolist() == [0, 1] * 9 and train.index.tolist() == [i // 2 for i in range(18)]
    # independent computation: CLIPModel's own projected features on the same crops
    model = CLIPModel.from_pretrained(clip).eval()
    split = read_split(data, "train")
    pixels = torch.cat([CoOpTransform(16, ("center", "flip"))(split.load(i)) for i in range(len(split))])
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=pixels)
        ref = getattr(ref, "pooler_output", ref)
    torch.testing.assert_close(train.features, ref, rtol=0, atol=1e-5)
    classes = read_table(tmp_path / "feats" / "classes.safetensors")
    assert classes.header["templates"] == ["a photo of a {}."] and len(classes) == 3
    tok = AutoTokenizer.from_pretrained(clip)
    batch = tok(["a photo of a red circle.", "a photo of a blue square.", "a photo of a green triangle."],
                padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model.get_text_features(**batch)
        ref = getattr(ref, "pooler_output", ref)
    torch.testing.assert_close(classes.features, ref, rtol=0, atol=1e-5)
    # same inputs and options: every table comes from the cache; a new template: only the text table
    assert all(r["cached"] for r in run(_args(tmp_path, data, clip)).values())
    again = run(_args(tmp_path, data, clip, templates="classname"))
    assert not again["classes"]["cached"] and again["train"]["cached"]


def test_cache_of_another_body_or_layer_is_refused(clip_and_images, tmp_path):
    clip, data = clip_and_images
    run(_args(tmp_path, data, clip, splits="valid"))
    other = argparse.Namespace(**{**vars(_args(tmp_path, data, clip, splits="valid")), "body": "hf:/elsewhere/clip"})

    class Renamed:  # the same weights under another spec: a different body for the cache
        def __init__(self, enc):
            self.enc = enc

        def __getattr__(self, name):
            return getattr(self.enc, name)

        def identity(self):
            return {**self.enc.identity(), "body": "hf:/elsewhere/clip"}

    from ofa_ext.models.crossmodal.adaptation_encoders import FeatureEncoder

    with pytest.raises(FeatureCacheError, match=r"made by body 'hf:.*clip' layer 0, not body 'hf:/elsewhere/clip'"):
        run(other, encoder=Renamed(FeatureEncoder(f"hf:{clip}")))
    with pytest.raises(FeatureCacheError, match=r"classes\.safetensors: features made by body 'hf:.*clip' layer 0, "
                       r"not body 'hf:.*clip' layer 1"):
        run(_args(tmp_path, data, clip, splits="valid", layer=1))
    with pytest.raises(ValueError, match=r"--layer 2: hf-clip-vision \(.*clip/config\.json\) has 1 blocks; .* "
                       r"1 <= k <= 1"):
        FeatureEncoder(f"hf:{clip}", layer=2)


def test_classnames_that_differ_from_the_labels(clip_and_images, tmp_path):
    clip, data = clip_and_images
    bad = tmp_path / "classes.txt"
    bad.write_text("red_circle\nblue_square\nyellow_star\n")
    args = argparse.Namespace(**{**vars(_args(tmp_path, data, clip)), "classnames": str(bad)})
    with pytest.raises(SampleSourceError, match=r"classes\.txt: its classes differ from the labels of .* split "
                       r"'train' \(labels not in the file: green_triangle; classes without samples: yellow_star\)"):
        run(args)


def test_tsv_split_reads_id_label_base64(tmp_path):
    from ofa_ext.data.transforms import encode_image_b64

    img = Image.new("RGB", (8, 6), (10, 200, 30))
    (tmp_path / "train.tsv").write_text(f"a\tcat\t{encode_image_b64(img, 'PNG')}\nb\tdog\t{encode_image_b64(img, 'PNG')}\n")
    split = read_split(tmp_path, "train")
    assert split.kind == "image" and split.labels == ["cat", "dog"] and split.load(1).size == (8, 6)
    (tmp_path / "valid.tsv").write_text("a\tcat\n")
    with pytest.raises(SampleSourceError, match=r"valid\.tsv:1: 3 columns expected"):
        read_split(tmp_path, "valid")


def test_few_shot_draw_and_too_many_shots(tmp_path):
    write_features(tmp_path, per_class=(6, 4, 5))
    table = read_table(tmp_path / "train.image.safetensors")
    rows = few_shot_rows(table, 2, seed=1, path="train")
    samples = sorted(set(table.index[rows].tolist()))
    assert len(rows) == 2 * 3 * 2  # 2 shots x 3 classes x 2 views
    assert sorted(table.labels[rows].tolist()) == sorted([0] * 4 + [1] * 4 + [2] * 4)
    assert all((table.index == s).sum() == 2 for s in samples)  # every view of a chosen sample
    assert rows.tolist() == few_shot_rows(table, 2, seed=1, path="train").tolist()
    assert rows.tolist() != few_shot_rows(table, 2, seed=2, path="train").tolist()
    with pytest.raises(FeatureCacheError, match=r"--shots 7: class 'class0' has only 6 samples in train"):
        few_shot_rows(table, 7, seed=1, path="train")


def test_two_stream_batches_compose_and_cover_each_pass():
    assert split_batch(8, 0.5) == (4, 4) and split_batch(7, 0.5) == (3, 4)
    n_text, n_image = 6, 10
    batches = two_stream_batches(n_text, n_image, 3, 5, seed=1, epoch=1, steps=4)
    for b in batches:
        assert (b < n_text).sum() == 3 and (b >= n_text).sum() == 5
    images = np.concatenate([b[b >= n_text] for b in batches[:2]])  # one pass over the image rows
    assert sorted(images.tolist()) == list(range(n_text, n_text + n_image))
    texts = np.concatenate([b[b < n_text] for b in batches[:2]])
    assert sorted(texts.tolist()) == list(range(n_text))
    # epochs continue the streams without state: epoch 2 = steps 4..7 of one long run
    long = two_stream_batches(n_text, n_image, 3, 5, seed=1, epoch=1, steps=8)
    assert all((a == b).all() for a, b in zip(long[4:], two_stream_batches(n_text, n_image, 3, 5, 1, 2, 4)))
    uni = two_stream_batches(0, n_image, 0, 5, seed=1, epoch=1, steps=2)
    assert all(len(b) == 5 for b in uni)


def test_heads_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    text, labels = torch.randn(6, 8, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])
    zs = zeroshot_weights(text, labels, 3)
    manual = torch.stack([F.normalize(text[labels == c].mean(0), dim=0) for c in range(3)])
    torch.testing.assert_close(zs, manual)
    x = torch.randn(4, 8, generator=g)
    head = XModalHead(XModalHeadConfig(), zs)
    torch.testing.assert_close(head(x), 100.0 * F.normalize(x, dim=-1) @ manual.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.zeroshot_logits(x), head(x))
    with torch.no_grad():
        head.linear.weight.add_(1.0)
    wise = head.wise_ft_weight(0.5)
    torch.testing.assert_close(wise, 0.5 * head.linear.weight + 0.5 * manual)
    ada = XModalHead(XModalHeadConfig(head="adapter"), zs)
    assert ada.adapter.down.weight.shape == (2, 8) and ada.adapter.down.bias is None
    f = F.normalize(x, dim=-1)
    a = F.relu(F.relu(f @ ada.adapter.down.weight.T) @ ada.adapter.up.weight.T)
    torch.testing.assert_close(ada(x), 100.0 * (0.2 * a + 0.8 * f) @ manual.T, rtol=1e-5, atol=1e-4)
    rand = XModalHead(XModalHeadConfig(classifier_init="random"), zs)
    assert not torch.allclose(rand.linear.weight, zs)


def _grid_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "run_scripts" / "xmodal" / "grid.py"
    spec = importlib.util.spec_from_file_location("xmodal_grid", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grid_reads_fairseq_logs_and_selects_by_validation_per_seed():
    grid = _grid_module()
    log = "\n".join([
        '2026 | INFO | valid | {"epoch": 1, "valid_accuracy": "50", "valid_num_updates": "100"}',
        '2026 | INFO | test | {"epoch": 1, "test_accuracy": "40", "test_accuracy_wiseft": "41", '
        '"test_accuracy_zeroshot": "30", "test_num_updates": "100"}',
        '2026 | INFO | valid | {"epoch": 2, "valid_accuracy": "75", "valid_num_updates": "200"}',
        '2026 | INFO | test | {"epoch": 2, "test_accuracy": "60", "test_num_updates": "200"}',
        '2026 | INFO | valid | {"epoch": 3, "valid_accuracy": "75", "valid_num_updates": "300"}',
        '2026 | INFO | test | {"epoch": 3, "test_accuracy": "90", "test_num_updates": "300"}',
    ])
    evals = grid.parse_log(log)
    assert [s for s, _ in evals] == [100, 200, 300] and evals[0][1]["test_accuracy_wiseft"] == 41.0
    a = {"config": {"lr": 1e-3}, "evals": evals}
    b = {"config": {"lr": 1e-4}, "evals": [(200, {"valid_accuracy": 75.0, "test_accuracy": 10.0})]}
    sel = grid.select([a, b])  # ties: the earlier step (200, not 300), then the earlier configuration
    assert (sel["config"], sel["step"], sel["test"]) == ({"lr": 1e-3}, 200, 60.0)
    assert grid.select([b, a])["config"] == {"lr": 1e-4}
    c = {"config": {"lr": 1e-5}, "evals": [(100, {"valid_accuracy": 75.0, "test_accuracy": 20.0})]}
    assert grid.select([a, c])["config"] == {"lr": 1e-5}  # an earlier step beats an earlier configuration
    assert grid.mean_std([60.0, 70.0]) == [65.0, 5.0] and grid.mean_std([None]) == [None, None]
    assert set(grid.GRIDS["linear"]["lr"]) == {1e-3, 1e-4} and grid.GRIDS["adapter"]["batch"] == [8]
