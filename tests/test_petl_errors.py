"""Bad input gets a clear error: options, injection sites, piece files. Plus the flag surface."""

import argparse
import json
import logging
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ofa_ext.models.petl import PETLConfig, apply_petl, load_pieces, read_piece_file, save_pieces
from ofa_ext.models.petl.toy import ToyOFA


def _toy(**kw):
    torch.manual_seed(0)
    return ToyOFA(**kw)


@pytest.mark.parametrize("opts,match", [
    (dict(lora=True, lora_targets="q_proj,qkv"), "lora-targets"),
    (dict(lora=True, lora_r=0), "lora-r"),
    (dict(adapter=True, adapter_dim=0), "adapter-dim"),
    (dict(adapter=True, adapter_sites="attn,cross"), "adapter-sites"),
    (dict(adapter=True, adapter_init="xavier"), "adapter-init"),
    (dict(encoder_prompt=True, encoder_prompt_length=-1), "encoder-prompt-length"),
    (dict(decoder_prompt=True, prompt_dropout=1.0), "prompt-dropout"),
    (dict(bitfit=True, bitfit_scope="some"), "bitfit-scope"),
])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        apply_petl(_toy(), PETLConfig(**opts))


def test_unmatched_site_is_an_error():
    class NoFFN(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList([nn.Module()])
            self.encoder.layers[0].post_attn = nn.Identity()
            self.encoder.layers[0].fc2 = nn.Linear(4, 4)

    with pytest.raises(ValueError, match="post_ffn.*matches no module"):
        apply_petl(NoFFN(), PETLConfig(adapter=True, adapter_dim=2))


def test_prefix_needs_provider_hook():
    model = _toy()
    for layer in model.encoder.layers:
        del layer.self_attn.prefix_provider
    with pytest.raises(TypeError, match="prefix_provider"):
        apply_petl(model, PETLConfig(encoder_prompt=True, encoder_prompt_length=2))


def test_wrong_base_type_and_double_apply():
    model = _toy()
    model.encoder.layers[0].fc1 = nn.Sequential(nn.Linear(32, 64))
    with pytest.raises(TypeError, match="encoder.layers.0.fc1.*Sequential"):
        apply_petl(model, PETLConfig(lora=True, lora_targets="fc1"))
    model = apply_petl(_toy(), PETLConfig(lora=True))
    with pytest.raises(RuntimeError, match="already"):
        apply_petl(model, PETLConfig(lora=True))


def test_adapter_dropout_defaults_to_layer_drop_path_rate():
    model = _toy()
    for i, layer in enumerate(model.encoder.layers):
        layer.drop_path = nn.Module()
        layer.drop_path.rate = 0.1 * i
    apply_petl(model, PETLConfig(adapter=True, adapter_dim=4))
    assert [l.post_ffn.dropout.p for l in model.encoder.layers] == [0.0, 0.1]
    assert model.decoder.layers[1].post_attn.dropout.p == 0.0
    model = apply_petl(_toy(), PETLConfig(adapter=True, adapter_dim=4, adapter_dropout=0.3))
    assert model.decoder.layers[0].post_attn.dropout.p == 0.3


# --- piece files --------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    cfg = PETLConfig(lora=True, lora_r=2, adapter=True, adapter_dim=4)
    model = apply_petl(_toy(), cfg)
    path = str(tmp_path / "p.safetensors")
    save_pieces(model, path, cfg, arch="toy", task="refcoco", extra={"step": 3})
    return path, cfg


def test_metadata_round_trip_and_atomic_write(saved):
    path, cfg = saved
    tensors, meta = read_piece_file(path)
    assert meta["petl_config"] == cfg and meta["methods"] == ["adapter", "lora"]
    assert meta["format_version"] == 1 and meta["extra"] == {"step": 3} and meta["arch"] == "toy"
    assert all(t.device.type == "cpu" for t in tensors.values())
    assert [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")] == []
    _, header_only = read_piece_file(path, tensors=False)
    assert header_only["backbone"] == meta["backbone"]


def test_load_refuses_other_method_shape_and_arch(saved):
    path, _ = saved
    with pytest.raises(ValueError, match="lora_r: file 2 vs model 4"):
        load_pieces(apply_petl(_toy(), PETLConfig(lora=True, lora_r=4, adapter=True, adapter_dim=4)), path)
    with pytest.raises(ValueError, match="another PETL setup"):
        load_pieces(apply_petl(_toy(), PETLConfig(bitfit=True)), path)
    other = apply_petl(_toy(embed_dim=48), PETLConfig(lora=True, lora_r=2, adapter=True, adapter_dim=4))
    with pytest.raises(ValueError, match="another backbone.*embed_dim: file 32 vs model 48"):
        load_pieces(other, path)
    with pytest.raises(ValueError, match="arch 'toy'"):
        load_pieces(apply_petl(_toy(), PETLConfig(lora=True, lora_r=2, adapter=True, adapter_dim=4)), path,
                    arch="ofa_base")
    with pytest.raises(RuntimeError, match="apply_petl"):
        load_pieces(_toy(), path)


def _rewrite(path, tensors=None, **meta_changes):
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = dict(f.metadata())
        tensors = tensors if tensors is not None else {k: f.get_tensor(k) for k in f.keys()}
    for k, v in meta_changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = json.dumps(v)
    save_file(tensors, path, metadata=meta)


def test_metadata_unknown_warns_missing_fails_newer_fails(saved, caplog):
    path, cfg = saved
    _rewrite(path, future_key={"x": 1}, petl_config={**json.loads(json.dumps(vars(cfg))), "new_field": 1})
    with caplog.at_level(logging.WARNING):
        read_piece_file(path)
    assert "future_key" in caplog.text and "new_field" in caplog.text
    _rewrite(path, format_version=2)
    with pytest.raises(ValueError, match="newer"):
        read_piece_file(path)
    _rewrite(path, format_version=1, backbone=None)
    with pytest.raises(ValueError, match="lacks required metadata.*backbone"):
        read_piece_file(path)


def test_strict_tensor_set_and_shape(saved):
    path, cfg = saved
    tensors, _ = read_piece_file(path)
    name = sorted(tensors)[0]
    _rewrite(path, tensors={k: v for k, v in tensors.items() if k != name})
    with pytest.raises(ValueError, match="missing"):
        load_pieces(apply_petl(_toy(), cfg), path)
    load_pieces(apply_petl(_toy(), cfg), path, strict=False)
    _rewrite(path, tensors={**tensors, name: torch.zeros(1, 1)})
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pieces(apply_petl(_toy(), cfg), path)


def test_not_a_piece_file(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a safetensors"):
        read_piece_file(str(bad))
    with pytest.raises(FileNotFoundError):
        read_piece_file(str(tmp_path / "missing.safetensors"))


def test_flags_through_fairseq_dataclass():
    """PETLConfig fields become `--adapter-dim`-style flags, and a model config carrying them works."""
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    parser = argparse.ArgumentParser()
    gen_parser_from_dataclass(parser, PETLConfig())
    args = parser.parse_args(["--lora", "--lora-r", "2", "--lora-targets", "q_proj,fc2", "--adapter",
                              "--adapter-dim", "4", "--adapter-dropout", "0.1", "--encoder-prompt",
                              "--encoder-prompt-length", "3", "--bitfit", "--bitfit-scope", "all"])
    model = apply_petl(_toy(), args)  # an argparse Namespace is accepted like the dataclass
    assert model.petl_config.lora_r == 2 and model.petl_config.adapter_dropout == 0.1
    assert model.encoder.encoder_prompt_encoder.length == 3
