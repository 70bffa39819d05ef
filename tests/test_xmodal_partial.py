"""Partial fine-tuning of cross-modal adaptation: layer-k caches, ``--head partial`` and PETL on its blocks.

Independent computation: the body's own full forward (layer-0 extraction) against the cached
layer-k hidden states passed through the head's copy of the last k blocks."""

import re
import sys

import pytest
import torch

from ofa_ext.api import load_body
from ofa_ext.cli.extract_features import build_parser, run
from ofa_ext.data.features import FeatureCacheError, read_table
from ofa_ext.models.crossmodal.adaptation import XModalHead, XModalHeadConfig
from ofa_ext.models.crossmodal.partial_blocks import PartialTower
from ofa_ext.tasks.crossmodal_adaptation import CrossmodalAdaptationConfig, CrossmodalAdaptationTask
from tests.e2e_helpers import USER_DIR, run as run_cmd
from tests.xmodal_helpers import image_folders, text_samples, tiny_clip_folder


def _extract(out, data, body, layer=0, dtype="float32", splits="train"):
    argv = ["--body", body, "--data", str(data), "--classnames", str(data / "classes.txt"), "--out", str(out),
            "--templates", "vanilla", "--batch-size", "4", "--layer", str(layer), "--cache-dtype", dtype,
            "--splits", splits]
    run(build_parser().parse_args(argv))
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    return tiny_clip_folder(root, layers=2), image_folders(root / "images"), text_samples(root / "texts")


def _through_blocks(table, k):
    tower = PartialTower(load_body(table.header["sample_body"]), k).eval()
    with torch.no_grad():
        return tower(table.features, table.padding)


def test_layer_k_states_through_the_head_blocks_equal_the_final_features(assets, tmp_path):
    clip, images, _ = assets
    final = read_table(_extract(tmp_path / "f0", images, f"hf:{clip}") / "train.image.safetensors")
    for k in (1, 2):  # the last block; every block (the cache is then the embedded patches)
        t = read_table(_extract(tmp_path / f"f{k}", images, f"hf:{clip}", layer=k) / "train.image.safetensors")
        h = t.header
        assert (h["layer"], h["cached_at"], h["sample_body"]) == (k, f"input of the last {k} blocks", f"hf:{clip}#vision")
        assert t.features.shape == (18, 5, 32) and t.features.dtype == torch.float32  # CLS + 2x2 patches, width 32
        torch.testing.assert_close(_through_blocks(t, k), final.features, rtol=1e-4, atol=1e-5)
        classes = read_table(tmp_path / f"f{k}" / "classes.safetensors")  # class texts stay final features
        assert classes.header["cached_at"] == "final" and classes.features.dim() == 2
    half = read_table(_extract(tmp_path / "h1", images, f"hf:{clip}", layer=1, dtype="float16") / "train.image.safetensors")
    assert half.features.dtype == torch.float16
    err = (_through_blocks(half, 1) - final.features).norm(dim=-1) / final.features.norm(dim=-1)
    assert float(err.max()) < 1e-2  # float16 storage of the hidden states


def test_text_samples_with_padding_minilm_and_clip_text(assets, tmp_path):
    clip, _, texts = assets
    for body, k in (("minilm", 2), (f"hf:{clip}", 1)):  # BERT-family mean pooling; CLIP causal, end-of-text token
        final = read_table(_extract(tmp_path / "t0", texts, body) / "train.text.safetensors")
        t = read_table(_extract(tmp_path / "tk", texts, body, layer=k) / "train.text.safetensors")
        assert t.padding is not None and bool(t.padding.any())  # texts of different lengths
        torch.testing.assert_close(_through_blocks(t, k), final.features, rtol=1e-4, atol=2e-5)
        for d in ("t0", "tk"):
            for f in (tmp_path / d).iterdir():
                f.unlink()


def _train(data, save, *extra):
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", USER_DIR, "--cpu",
           "--task", "crossmodal_adaptation", "--shots", "2", "--updates-per-epoch", "3", "--arch", "xmodal_head",
           "--head", "partial", "--criterion", "xmodal_ce", "--optimizer", "adam", "--lr", "1e-2",
           "--lr-scheduler", "fixed", "--batch-size", "4", "--max-update", "3", "--valid-subset", "valid",
           "--no-epoch-checkpoints", "--save-dir", str(save), "--log-format", "json", "--num-workers", "0", *extra]
    run_cmd(cmd, save.parent, timeout=300)
    return torch.load(save / "checkpoint_last.pt", weights_only=False)["model"]


def test_fairseq_partial_trains_the_last_blocks_and_lora_only_its_pieces(assets, tmp_path):
    clip, images, _ = assets
    data = _extract(tmp_path / "feats", images, f"hf:{clip}", layer=1, splits="train,valid,test")
    pretrained = {k: v for k, v in load_body(f"hf:{clip}#vision").state_dict().items()}
    last = {k.replace("model.encoder.layers.1.", "partial.body.model.encoder.layers.0."): v
            for k, v in pretrained.items() if k.startswith("model.encoder.layers.1.")}
    after = {**last, "partial.body.model.post_layernorm.weight": pretrained["model.post_layernorm.weight"],
             "partial.body.projection.weight": pretrained["projection.weight"]}

    full = _train(data, tmp_path / "full")
    assert not any(".layers.1." in k or "embeddings" in k or "pre_layrnorm" in k for k in full)  # only the last block
    assert set(after) <= set(full)
    assert all(not torch.equal(full[k], v) for k, v in after.items() if k.endswith("weight"))  # all of them trained

    lora = _train(data, tmp_path / "lora", "--lora", "--lora-r", "4")
    pieces = [k for k in lora if ".lora_" in k]
    assert pieces and all("layers.0.self_attn" in k for k in pieces)
    for k, v in after.items():  # the blocks' own weights stay pretrained (LoRA wraps the projections: .base.)
        key = k if k in lora else k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        torch.testing.assert_close(lora[key], v, rtol=0, atol=0)
    assert all(bool(lora[k].abs().sum() > 0) for k in pieces if k.endswith("lora_B"))  # B left 0: trained


def _head(**kw) -> XModalHeadConfig:
    return XModalHeadConfig(_name="xmodal_head", **kw)


def _task(data):
    return CrossmodalAdaptationTask.setup_task(CrossmodalAdaptationConfig(data=str(data), shots=2))


def test_partial_head_at_init_scale_and_lora_identity(assets, tmp_path):
    clip, images, _ = assets
    data = _extract(tmp_path / "feats", images, f"hf:{clip}", layer=1)
    task = _task(data)
    task.load_dataset("train")
    batch = task.dataset("train").collater(list(range(2)) + list(range(len(task.text_table), len(task.text_table) + 4)))
    plain = XModalHead.build_model(_head(head="partial"), task).eval()
    assert plain.scale == pytest.approx(torch.tensor(4.0).exp().item())
    assert all(p.requires_grad for p in plain.parameters())
    pieces = {"lora": ({"lora": True, "lora_r": 4}, r"\.lora_[AB]"),
              "adapter": ({"adapter": True, "adapter_dim": 8}, r"\.adapter\."),
              "bitfit": ({"bitfit": True}, r"\.bias")}
    for method, (flags, pattern) in pieces.items():
        petl = XModalHead.build_model(_head(head="partial", **flags), task).eval()
        trainable = sorted(n for n, p in petl.named_parameters() if p.requires_grad)
        on_blocks = [n for n in trainable if n != "linear.weight"]
        assert on_blocks and all(re.search(pattern, n) and "layers.0." in n for n in on_blocks), (method, trainable)
        with torch.no_grad():  # LoRA B = 0, zero-initialised adapters, untouched biases: the plain head at init
            torch.testing.assert_close(petl(**batch["net_input"]), plain(**batch["net_input"]), rtol=0, atol=1e-6)


def test_partial_head_on_final_features_and_a_linear_head_on_states_are_refused(assets, tmp_path):
    clip, images, _ = assets
    final = _task(_extract(tmp_path / "f0", images, f"hf:{clip}"))
    with pytest.raises(FeatureCacheError, match=r"--head partial: .*train\.image\.safetensors holds final features "
                       r"\(layer 0\); .*--layer k \(k >= 1\)"):
        XModalHead.build_model(_head(head="partial"), final)
    with pytest.raises(ValueError, match=r"--lora: PETL pieces go on the body's last blocks, which only --head partial"):
        XModalHead.build_model(_head(head="linear", lora=True), final)
    states = _task(_extract(tmp_path / "f1", images, f"hf:{clip}", layer=1))
    with pytest.raises(FeatureCacheError, match=r"--head linear: .*train\.image\.safetensors holds hidden states at "
                       r"the input of the last 1 blocks .* --head partial"):
        states.build_model(_head(head="linear"))
