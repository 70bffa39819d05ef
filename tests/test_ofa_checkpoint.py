"""Checkpoint reading, upgrades, mismatch reports, fairseq plumbing, registration and the CLI."""

import argparse
import importlib
import json

import pytest
import torch

from conftest import small_dictionary
from ofa_ext.cli import ckpt_info
from ofa_ext.api import load_official_checkpoint
from ofa_ext.models.ofa.checkpoint import CheckpointError, read_checkpoint
from ofa_ext.models.ofa.mismatch import CheckpointMismatchError
from ofa_ext.models.ofa.placeholder_dict import SizedDictionary
from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config


def _namespace(cfg, arch="ofa_nano", drop=()):
    ns = argparse.Namespace(**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__
                               if not k.startswith("_") and k not in drop})
    ns._name = ns.arch = arch
    return ns


@pytest.fixture
def nano_file(ofa_nano, tmp_path):
    model, cfg, d = ofa_nano(seed=2)
    path = tmp_path / "nano.pt"
    torch.save({"args": None, "cfg": {"model": _namespace(cfg)}, "model": model.state_dict()}, path)
    return path, model, cfg, d


def _x(d):
    g = torch.Generator().manual_seed(0)
    return dict(src_tokens=torch.randint(4, len(d), (2, 6), generator=g), src_lengths=None,
                prev_output_tokens=torch.randint(4, len(d), (2, 4), generator=g),
                patch_images=torch.randn(2, 3, 32, 32, generator=g))


# -- unreadable files -----------------------------------------------------------------------------
def test_truncated_file(nano_file, tmp_path):
    path = nano_file[0]
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_official_checkpoint(str(bad))


def test_garbage_and_wrong_layout(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        read_checkpoint(str(junk))
    nomodel = tmp_path / "nomodel.pt"
    torch.save({"weights": {}}, nomodel)
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        read_checkpoint(str(nomodel))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(str(tmp_path / "absent.pt"))


class _Arbitrary:
    pass


def test_unsafe_pickle_refused_unless_trusted(nano_file, tmp_path):
    path, model, cfg, d = nano_file
    odd = tmp_path / "odd.pt"
    state = torch.load(path, weights_only=True)
    state["extra_state"] = {"thing": _Arbitrary()}
    torch.save(state, odd)
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle"):
        read_checkpoint(str(odd))
    assert "model" in read_checkpoint(str(odd), allow_unsafe_pickle=True)


# -- mismatch reports -----------------------------------------------------------------------------
def test_other_size_gives_one_grouped_report(nano_file):
    path, model, _, _ = nano_file
    with torch.device("meta"):
        tiny = OFAFairseqModel.build_from_config(to_ofa_config({"_name": "ofa_tiny"}, script_flags=True),
                                                 SizedDictionary())
    with pytest.raises(CheckpointMismatchError) as err:
        tiny.load_state_dict(model.state_dict(), strict=True, model_cfg=None)
    msg = str(err.value)
    assert "checkpoint looks like: ofa_nano" in msg and "model looks like: ofa_tiny" in msg
    assert "shape mismatch" in msg and "encoder.embed_tokens.weight: checkpoint [64, 64] vs model [59457, 256]" in msg
    assert "missing from the checkpoint" in msg and "encoder.layers.*.self_attn" in msg
    assert err.value.mismatched and err.value.missing
    # through the file loader: the error names the file
    with pytest.raises(CheckpointMismatchError, match="nano.pt"):
        load_official_checkpoint(str(path), arg_overrides={"encoder_layers": 3})


def test_flag_mismatch_names_the_flags(nano_file, ofa_nano):
    _, model, _, d = nano_file
    torch.manual_seed(0)
    bare = OFAFairseqModel.build_from_config(to_ofa_config({"_name": "ofa_nano"}, script_flags=False), d)
    with pytest.raises(CheckpointMismatchError) as err:
        bare.load_state_dict(model.state_dict())
    msg = str(err.value)
    for flag in ("--scale-attn", "--scale-fc", "--scale-heads"):
        assert f"build the model with {flag}" in msg
    assert "unexpected in the checkpoint" in msg and "encoder.layers.*.attn_ln.{weight,bias}" in msg


def test_optional_state_keys_are_filled(nano_file, ofa_nano):
    _, model, _, d = nano_file
    other, _, _ = ofa_nano(seed=9)
    other.encoder.layers[0].post_ffn = torch.nn.Linear(64, 64)  # stands for a PETL piece
    with pytest.raises(CheckpointMismatchError, match="encoder.layers.*.post_ffn"):
        other.load_state_dict(model.state_dict())
    kept = other.encoder.layers[0].post_ffn.weight.detach().clone()
    other.optional_state_keys |= {"encoder.layers.0.post_ffn.weight", "encoder.layers.0.post_ffn.bias"}
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.encoder.layers[0].post_ffn.weight, kept)
    assert torch.equal(other.encoder.embed_tokens.weight, model.encoder.embed_tokens.weight)


# -- upgrades of older / other writers' files -----------------------------------------------------
def test_legacy_names_buffers_and_fp16(nano_file, ofa_nano):
    _, model, _, d = nano_file
    model.eval()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for side in ("encoder", "decoder"):
        for k in [k for k in sd if k.endswith("rp_bucket") or k.endswith(".version")]:
            del sd[k]
        a = f"{side}.layers.0.self_attn"
        sd[f"{a}.in_proj_weight"] = torch.cat([sd.pop(f"{a}.{p}_proj.weight") for p in "qkv"])
        sd[f"{a}.in_proj_bias"] = torch.cat([sd.pop(f"{a}.{p}_proj.bias") for p in "qkv"])
    for leaf in ("weight", "bias"):
        sd[f"decoder.layers.1.layer_norms.1.{leaf}"] = sd.pop(f"decoder.layers.1.encoder_attn_layer_norm.{leaf}")
    del sd["decoder.output_projection.weight"], sd["decoder.embed_tokens.weight"]
    sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    fresh, _, _ = ofa_nano(seed=7)
    fresh.load_state_dict(sd)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(**_x(d))[0], model.half().float()(**_x(d))[0], atol=1e-4, rtol=0)


def test_embedding_rows_follow_the_dictionary(nano_file, ofa_nano):
    _, model, _, d = nano_file
    sd = model.state_dict()
    emb = sd["encoder.embed_tokens.weight"]
    plus_one = dict(sd)
    for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight"):
        plus_one[k] = torch.cat([emb, torch.randn(1, emb.shape[1])])
    fresh, _, _ = ofa_nano(seed=7)  # dictionary without <mask>: the extra row is dropped
    fresh.load_state_dict(plus_one)
    assert torch.equal(fresh.encoder.embed_tokens.weight, emb)
    bigger, _, d2 = ofa_nano(seed=7, dictionary=small_dictionary(70))  # more symbols: rows appended
    bigger.load_state_dict(sd)
    assert torch.equal(bigger.encoder.embed_tokens.weight[: len(d)], emb)
    assert bigger.decoder.output_projection.weight is bigger.encoder.embed_tokens.weight


def test_old_args_only_file_and_alias(ofa_nano, tmp_path):
    model, cfg, d = ofa_nano(seed=1)
    old = _namespace(cfg, drop=("scale_attn", "scale_fc", "scale_heads", "disable_entangle", "code_image_size"))
    path = tmp_path / "old.pt"
    torch.save({"args": old, "model": model.state_dict()}, path)
    # a file that predates the scale_* flags was trained without them: keys then do not fit
    with pytest.raises(CheckpointMismatchError, match="--scale-attn"):
        load_official_checkpoint(str(path), dictionary=d)
    loaded, lcfg = load_official_checkpoint(
        str(path), dictionary=d,
        arg_overrides=dict(scale_attn=True, scale_fc=True, scale_heads=True, disable_entangle=True),
    )
    assert lcfg.code_image_size == 128  # default for a key the old file lacks
    assert to_ofa_config({"_name": "m6_unify_large"}, script_flags=True).encoder_layers == 12


def test_fairseq_reads_official_layout(nano_file):
    """fairseq's own reader (used by --restore-file / --finetune-from-model) accepts the Namespace."""
    from fairseq import checkpoint_utils

    path, model, cfg, _ = nano_file
    state = torch.load(path, weights_only=True)
    state["optimizer_history"] = [{"criterion_name": "x", "optimizer_name": "FairseqAdam",
                                   "lr_scheduler_state": {}, "num_updates": 0}]
    state["extra_state"] = {"train_iterator": {"epoch": 1}}
    torch.save(state, path)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["cfg"]["model"].arch == "ofa_nano"
    fresh = OFAFairseqModel.build_from_config(to_ofa_config(state["cfg"]["model"]), small_dictionary())
    fresh.load_state_dict(state["model"], strict=True, model_cfg=state["cfg"]["model"])


# -- fairseq registration -------------------------------------------------------------------------
class _Task:
    def __init__(self, d):
        self.source_dictionary = self.target_dictionary = d


def _fairseq_build(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models import build_model

    args = options.parse_args_and_arch(options.get_training_parser(), ["data", "--task", "translation"] + argv)
    cfg = convert_namespace_to_omegaconf(args)
    with torch.device("meta"):
        return build_model(cfg.model, _Task(SizedDictionary())), cfg


def test_fairseq_arch_gives_official_model():
    official = json.loads((__import__("pathlib").Path(__file__).parent / "data/ofa_keys/ofa_base.json").read_text())
    for extra in ([], ["--scale-attn", "--scale-heads"]):
        model, cfg = _fairseq_build(["--arch", "ofa_base"] + extra)
        assert {k: list(v.shape) for k, v in model.state_dict().items()} == official["keys"]
        assert cfg.model.scale_attn and cfg.model.disable_entangle and cfg.model.decoder_embed_dim == 768
    model, cfg = _fairseq_build(["--arch", "ofa_tiny", "--bare-arch-defaults", "--encoder-layers", "2"])
    assert not cfg.model.scale_attn and cfg.model.encoder_layers == 2 and len(model.encoder.layers) == 2


def test_resnet_layout_option_reaches_the_trunk(capsys):
    model, _ = _fairseq_build(["--arch", "ofa_tiny"])
    assert model.encoder.embed_images.layout == "contiguous"  # OFA's layout unless asked
    model, cfg = _fairseq_build(["--arch", "ofa_tiny", "--resnet-layout", "channels_last"])
    assert cfg.model.resnet_layout == "channels_last" and model.encoder.embed_images.layout == "channels_last"
    with pytest.raises(SystemExit):
        _fairseq_build(["--arch", "ofa_tiny", "--resnet-layout", "nhwc"])
    assert "--resnet-layout: invalid choice: 'nhwc'" in capsys.readouterr().err


def test_registration_is_idempotent():
    """Registering again, re-executing the module and importing the user dir twice change nothing:
    every arch still builds the official key set through fairseq, from the first registered class."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
    from fairseq.utils import import_user_module

    import ofa_ext.models.registered as reg

    model_cls = MODEL_REGISTRY["ofa"]
    archs = sorted(a for a, cls in ARCH_MODEL_REGISTRY.items() if cls is model_cls)
    assert {"ofa_nano", "ofa_tiny", "ofa_base", "ofa_large", "ofa_huge"} <= set(archs)
    reg.register()
    importlib.reload(reg)  # a second execution of the module must not raise "Cannot register duplicate"
    user_dir = argparse.Namespace(user_dir=str(__import__("pathlib").Path(reg.__file__).parents[1]))
    import_user_module(user_dir)
    import_user_module(user_dir)
    assert MODEL_REGISTRY["ofa"] is model_cls
    assert sorted(a for a, cls in ARCH_MODEL_REGISTRY.items() if cls is model_cls) == archs
    official = json.loads((__import__("pathlib").Path(__file__).parent / "data/ofa_keys/ofa_tiny.json").read_text())
    model, _ = _fairseq_build(["--arch", "ofa_tiny"])
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == official["keys"]


# -- CLI ------------------------------------------------------------------------------------------
def test_ckpt_info_cli(nano_file, capsys):
    path, model, _, _ = nano_file
    assert ckpt_info.main([str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch_guess"] == "ofa_nano" and info["params"] == sum(p.numel() for p in model.parameters())
    assert ckpt_info.main(["--arch", "ofa_tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 33_488_336 and len(info["shapes"]) == 543
    assert info["shapes"]["decoder.output_projection.weight"] == [59457, 256]
    with pytest.raises(SystemExit) as exit_info:
        ckpt_info.main([str(path) + ".missing"])
    assert exit_info.value.code == 2
    assert "no such checkpoint" in capsys.readouterr().err
