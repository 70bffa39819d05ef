"""The OFA encoder as the multimodal body of ``ofa-extract-features``: features against the encoder
called by hand, the cache (reuse, another body refused), the vocabulary's bad inputs, and a
``fairseq-train --task crossmodal_adaptation`` run (through the grid script) on the features."""

import argparse
import json

import pytest
import torch

from ofa_ext.cli.extract_features import build_parser, main, run
from ofa_ext.data.features import FeatureCacheError, read_table
from ofa_ext.data.xmodal_sources import CoOpTransform, read_split
from tests.xmodal_helpers import image_folders, tiny_clip_folder

CLASSES = ("red_circle", "blue_square", "green_triangle")
SIZE = 32  # the checkpoint's patch_image_size: 2 x 2 ResNet patches


def _nano(spm, seed=0, **sizes):
    """ofa_nano over the sentencepiece dictionary (10 bins, no codes), as (model, stored config)."""
    from ofa_ext.data.text import build_sentencepiece_dictionary
    from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config

    torch.manual_seed(seed)
    cfg = to_ofa_config({"_name": "ofa_nano", **sizes}, script_flags=True)
    model = OFAFairseqModel.build_from_config(cfg, build_sentencepiece_dictionary(spm, num_bins=10, code_dict_size=0))
    stored = argparse.Namespace(**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if not k.startswith("_")})
    stored._name = stored.arch = "ofa_nano"
    return model.eval(), stored


def _save(path, model, stored, **task):
    """A checkpoint laid out as fairseq-train writes ours: model weights, cfg.model, cfg.task."""
    torch.save({"args": None, "cfg": {"model": stored, "task": task}, "model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def ofa(tmp_path_factory):
    from ofa_ext.data.text import train_sentencepiece

    root = tmp_path_factory.mktemp("xmodal_ofa")
    texts = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSES] * 10 + ["the big yellow star"] * 5
    spm = train_sentencepiece(texts, root / "vocab", vocab_size=40)
    model, stored = _nano(spm)
    task = {"_name": "refcoco", "bpe": "sentencepiece", "spm_model": str(spm), "num_bins": 10, "code_dict_size": 0,
            "patch_image_size": SIZE}
    ckpt = _save(root / "checkpoint_best.pt", model, stored, **task)
    return {"root": root, "spm": spm, "model": model, "stored": stored, "task": task, "ckpt": ckpt,
            "data": image_folders(root / "images", classes=CLASSES)}


def _args(ofa, out, body=None, **kw):
    data = ofa["data"]
    argv = ["--body", body or f"ofa:{ofa['ckpt']}", "--data", str(data), "--classnames", str(data / "classes.txt"),
            "--out", str(out), "--templates", "vanilla", "--batch-size", "4"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return build_parser().parse_args(argv)


def _by_hand_text(ofa, text):
    """Sentencepiece pieces of ' ' + text looked up in the dictionary, bos/eos around, encoder, mean."""
    import sentencepiece

    from ofa_ext.data.text import build_sentencepiece_dictionary

    d = build_sentencepiece_dictionary(ofa["spm"], num_bins=10, code_dict_size=0)
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(ofa["spm"])).encode(" " + text.lower(), out_type=str)
    ids = torch.tensor([[0] + [d.index(p) for p in pieces] + [2]])
    assert (ids != d.unk()).all()
    with torch.no_grad():
        return ofa["model"].encoder(ids)["encoder_out"][0].mean(0)[0]  # [T, 1, C] -> [C]


def test_extraction_equals_the_ofa_encoder_by_hand_and_is_cached(ofa, tmp_path):
    report = run(_args(ofa, tmp_path / "feats"))
    assert set(report) == {"classes", "train", "valid", "test"} and not any(r["cached"] for r in report.values())
    train = read_table(tmp_path / "feats" / "train.image.safetensors")
    h = train.header
    assert (h["body"], h["layer"], h["image_size"], h["views"]) == (f"ofa:{ofa['ckpt']}", 0, SIZE, ["center", "flip"])
    assert h["signature"]["ofa_encoder"]["encoder_layers"] == 2 and h["signature"]["text_vocabulary"] == "sentencepiece"
    assert len(train) == 2 * 9 and train.features.shape[1] == 64
    # images alone through the encoder (no text token), OFA's 0.5 mean/std, the mean of the 4 patches
    split = read_split(ofa["data"], "train")
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    pixels = torch.cat([CoOpTransform(SIZE, ("center", "flip"), half)(split.load(i)) for i in range(len(split))])
    with torch.no_grad():
        out = ofa["model"].encoder(torch.zeros(len(pixels), 0, dtype=torch.long), patch_images=pixels)
    hidden = out["encoder_out"][0]  # [4 patches, B, C]
    assert hidden.shape[0] == 4
    torch.testing.assert_close(train.features, hidden.mean(0), rtol=0, atol=1e-5)
    # texts alone, one at a time (no padding), the same mean: equals the padded batch of the table
    classes = read_table(tmp_path / "feats" / "classes.safetensors")
    assert len(classes) == 3 and classes.header["templates"] == ["a photo of a {}."]
    ref = torch.stack([_by_hand_text(ofa, f"a photo of a {c.replace('_', ' ')}.") for c in CLASSES])
    torch.testing.assert_close(classes.features, ref, rtol=0, atol=1e-5)
    # same inputs: everything from the cache; the checkpoint written again: everything re-extracted
    assert all(r["cached"] for r in run(_args(ofa, tmp_path / "feats")).values())
    _save(ofa["ckpt"], ofa["model"], ofa["stored"], **ofa["task"])
    assert not any(r["cached"] for r in run(_args(ofa, tmp_path / "feats", splits="valid")).values())


def test_cache_of_another_body_is_refused(ofa, tmp_path):
    clip = tiny_clip_folder(ofa["root"])
    run(_args(ofa, tmp_path / "feats", splits="valid"))
    with pytest.raises(FeatureCacheError, match=r"features made by body 'ofa:.*checkpoint_best\.pt' layer 0, "
                       r"not body 'hf:.*clip' layer 0; extract into another folder or pass --overwrite"):
        run(_args(ofa, tmp_path / "feats", body=f"hf:{clip}", splits="valid"))
    run(_args(ofa, tmp_path / "clip_feats", body=f"hf:{clip}", splits="valid"))
    with pytest.raises(FeatureCacheError, match=r"made by body 'hf:.*clip' layer 0, not body 'ofa:"):
        run(_args(ofa, tmp_path / "clip_feats", splits="valid"))
    # another OFA model at the same path (one encoder layer): the same spec, other shapes
    other = ofa["root"] / "other" / "checkpoint_best.pt"
    other.parent.mkdir()
    run(_args(ofa, tmp_path / "other_feats", body=f"ofa:{_save(other, ofa['model'], ofa['stored'], **ofa['task'])}",
              splits="valid"))
    small, stored = _nano(ofa["spm"], encoder_layers=1)
    _save(other, small, stored, **ofa["task"])
    with pytest.raises(FeatureCacheError, match=r"\(same spec, different shapes: the checkpoint changed\)"):
        run(_args(ofa, tmp_path / "other_feats", body=f"ofa:{other}", splits="valid"))


def test_text_vocabulary_bad_inputs_one_line_each(ofa, tmp_path, capsys):
    from ofa_ext.data.text import train_sentencepiece

    def message(path, *extra, body=None):
        argv = ["--body", body or f"ofa:{path}", "--data", str(ofa["data"]), "--classnames",
                str(ofa["data"] / "classes.txt"), "--out", str(tmp_path / "f"), "--templates", "vanilla", *extra]
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert "\n" not in str(e.value)
        return str(e.value)

    task = dict(ofa["task"])
    no_vocab = _save(tmp_path / "no_vocab.pt", ofa["model"], ofa["stored"], **{**task, "spm_model": None})
    assert message(no_vocab).endswith("no text vocabulary (the checkpoint names no sentencepiece model); "
                                      "give it with --spm-model FILE")
    gone = _save(tmp_path / "gone.pt", ofa["model"], ofa["stored"], **{**task, "spm_model": str(tmp_path / "x.model")})
    assert "the checkpoint's sentencepiece model" in message(gone) and message(gone).endswith("--spm-model FILE")
    official = _save(tmp_path / "official.pt", ofa["model"], ofa["stored"], **{**task, "bpe": None, "spm_model": None})
    assert message(official).endswith("names no GPT-2 BPE folder); give it with --bpe-dir DIR "
                                      "(dict.txt, encoder.json, vocab.bpe)")
    other = train_sentencepiece(["completely different words here"] * 5, tmp_path / "v2", vocab_size=20)
    wrong = message(ofa["ckpt"], "--spm-model", str(other))
    assert "entries (num_bins=10, code_dict_size=0), the checkpoint embeds" in wrong and wrong.endswith("not its vocabulary")
    assert "not both" in message(ofa["ckpt"], "--spm-model", str(other), "--bpe-dir", str(tmp_path))
    assert message("ofa_nano#text").endswith("images and texts are both encoded")
    clip = tiny_clip_folder(ofa["root"])
    assert message(None, "--spm-model", str(other), body=f"hf:{clip}").endswith(
        "--spm-model: only for an 'ofa:' body (the text vocabulary of an OFA checkpoint); "
        f"--body hf:{clip} brings its own tokenizer")

def test_a_random_arch_takes_its_vocabulary_from_the_options(ofa):
    """``ofa:ARCH``: random weights over the vocabulary given (OFA's GPT-2 BPE from tests/data here)."""
    from pathlib import Path

    from ofa_ext.data.text import build_text_encoder
    from ofa_ext.models.crossmodal.adaptation_encoders import feature_encoder

    with pytest.raises(ValueError, match=r"--body ofa:ofa_nano: a random OFA encoder has no text vocabulary; "
                       r"give it with --spm-model FILE or --bpe-dir DIR"):
        feature_encoder("ofa:ofa_nano")
    bpe_dir = Path(__file__).resolve().parent / "data" / "ofa_bpe"
    enc = feature_encoder("ofa:ofa_nano", bpe_dir=str(bpe_dir))
    d, text_encoder = build_text_encoder("gpt2", bpe_dir=bpe_dir)
    assert enc.kind == "gpt2" and len(enc.dictionary) == len(d) == 59457 and enc.image_size is None
    ids, pad = enc.token_ids(["A red circle.", "cat"])
    for i, text in enumerate([" a red circle.", " cat"]):  # OFA's lower-case caption after a space
        assert ids[i][~pad[i]].tolist() == [0, *text_encoder.encode(text), 2]
    assert pad[1].any() and not pad[0].any()
    assert enc.encode_texts(["A red circle.", "cat"]).shape == (2, 64)
    assert enc.encode_images(torch.randn(1, 3, 32, 32)).shape == (1, 64)
    with pytest.raises(ValueError, match=r"--image-size: --body ofa:ofa_nano names no image size"):
        run(_args(ofa, ofa["root"] / "random", body="ofa:ofa_nano", spm_model=ofa["spm"], splits="valid"))
    report = run(_args(ofa, ofa["root"] / "random", body="ofa:ofa_nano", spm_model=ofa["spm"], splits="valid",
                       image_size=SIZE))
    assert read_table(report["valid"]["path"]).header["image_size"] == SIZE


def test_fairseq_train_on_ofa_features_through_the_grid_script(ofa, tmp_path):
    from tests.test_xmodal import _grid_module

    run(_args(ofa, tmp_path / "feats"))
    result = _grid_module().main(["--features", str(tmp_path / "feats"), "--out", str(tmp_path / "grid"),
                                  "--lrs", "1e-3", "--weight-decays", "1e-4", "--batches", "4", "--shots", "2",
                                  "--seeds", "1", "--max-update", "8", "--updates-per-epoch", "4",
                                  "--warmup-updates", "2"])
    assert result["runs"] == 1 and result["skipped"] == 0
    sel = result["per_seed"]["2/1"]
    assert sel["step"] in (4, 8) and 0 <= sel["test"] <= 100 and sel["test_zeroshot"] is not None
    (rec,) = [json.loads(line) for line in (tmp_path / "grid" / "runs.jsonl").read_text().splitlines()]
    assert rec["rc"] == 0 and [step for step, _ in rec["evals"]] == [4, 8]  # a validation every 4 updates


def test_a_fairseq_trained_grounding_checkpoint_brings_its_vocabulary(tmp_path):
    """A real `fairseq-train --task refcoco` checkpoint (as the demo's foundation): the extractor reads
    its stored sentencepiece model; tokens and features equal those of fairseq's own loader + task."""
    from ofa_ext.models.crossmodal.adaptation_encoders import feature_encoder
    from tests.e2e_helpers import fairseq_train, load_for_eval, make_tiny_grounding_data

    data = make_tiny_grounding_data(tmp_path / "data", n_train=8)
    fairseq_train(data, tmp_path / "ckpt", ["--max-update", "1", "--disable-validation"], cwd=tmp_path)
    ckpt = tmp_path / "ckpt" / "checkpoint_last.pt"
    enc = feature_encoder(f"ofa:{ckpt}")
    assert enc.image_size == 64 and enc.kind == "sentencepiece"
    model, task = load_for_eval(ckpt)
    text = "A photo of a red circle."
    ids = torch.tensor([[task.dictionary.bos(), *task.text_encoder.encode(" a photo of a red circle."),
                         task.dictionary.eos()]])
    assert enc.token_ids([text, "x"])[0][:1].tolist() == ids.tolist()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref_text = model.encoder(ids)["encoder_out"][0].mean(0)
        ref_image = model.encoder(torch.zeros(2, 0, dtype=torch.long), patch_images=images)["encoder_out"][0].mean(0)
    torch.testing.assert_close(enc.encode_texts([text]), ref_text, rtol=0, atol=1e-5)
    torch.testing.assert_close(enc.encode_images(images), ref_image, rtol=0, atol=1e-5)


def test_probe_scores_separable_features_high_and_noise_at_chance(tmp_path):
    """run_scripts/xmodal/probe.py: a full-data linear probe on a feature folder."""
    import importlib.util
    from pathlib import Path

    from tests.xmodal_helpers import write_features

    path = Path(__file__).resolve().parents[1] / "run_scripts" / "xmodal" / "probe.py"
    spec = importlib.util.spec_from_file_location("xmodal_probe", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    clusters = mod.probe(write_features(tmp_path / "clusters", noise=0.05, per_class=(6, 4, 20)))
    assert clusters == {"features": str(tmp_path / "clusters"), "train_rows": 36, "classes": 3,
                        "test_accuracy": 100.0, "chance": 33.33}
    noise = mod.probe(write_features(tmp_path / "noise", noise=30.0, per_class=(6, 4, 200)))
    assert abs(noise["test_accuracy"] - 33.3) < 12  # 600 test rows of (nearly) pure noise
