"""PETL on the real OFA backbone: published piece sizes, checkpoint loading, the fairseq flag path."""

import argparse
import copy

import pytest
import torch

import ofa_ext.models.registered  # noqa: E402,F401  (registers model ofa; a broken import fails)

from fairseq.data import Dictionary  # noqa: E402
from fairseq.dataclass.utils import gen_parser_from_dataclass  # noqa: E402

from ofa_ext.models.ofa.model import OFAModel  # noqa: E402
from ofa_ext.models.petl import PETLConfig, apply_petl, trainable_summary  # noqa: E402
from ofa_ext.models.registered import OFAConfig, OFAFairseqModel, to_ofa_config  # noqa: E402


def _dictionary(n: int = 60) -> Dictionary:
    d = Dictionary()
    for i in range(n):
        d.add_symbol(f"w{i}")
    return d


# Parameter counts of π-Tuning's pieces, by the arithmetic of specs/pi_tuning.md §3 (adapter r_a=128,
# LoRA r=16 on q/k/v/out of all attention modules, prefix P=100 without projection on both sides).
# (ofa_base: 70,656 / 4,740,096 / 1,769,472 likewise; left out to keep the file fast.)
PUBLISHED = {
    "ofa_large": {"bitfit": 186_368, "adapter": 12_638_208, "lora": 4_718_592, "prefix": 4_915_200},
}
METHOD_CFG = {
    "bitfit": dict(bitfit=True), "adapter": dict(adapter=True, adapter_dim=128), "lora": dict(lora=True, lora_r=16),
    "prefix": dict(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=100, decoder_prompt_length=100),
}


@pytest.mark.parametrize("arch", PUBLISHED)
def test_piece_sizes_match_pi_tuning_arithmetic(arch):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        base = OFAModel.build_from_config(to_ofa_config({"arch": arch}, script_flags=True), Dictionary())
    for method, expected in PUBLISHED[arch].items():
        model = apply_petl(copy.deepcopy(base), PETLConfig(**METHOD_CFG[method]))
        assert trainable_summary(model)["trainable"] == expected, method


def _nano(**petl):
    torch.manual_seed(0)
    return OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano", **petl}, script_flags=True), _dictionary())


def _forward(model):
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 64, (2, 5), generator=g)
    prev = torch.randint(4, 64, (2, 4), generator=g)
    img = torch.randn(2, 3, 32, 32, generator=g)
    return model(src, torch.tensor([5, 5]), prev, patch_images=img, patch_masks=torch.ones(2, dtype=torch.bool))[0]


@pytest.mark.parametrize("opts", [dict(adapter=True, adapter_dim=8), dict(lora=True, lora_r=4, lora_targets="q_proj,fc1"),
                                  dict(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=2,
                                       decoder_prompt_length=2, prompt_projection=True), dict(bitfit=True)])
def test_backbone_checkpoint_loads_into_petl_model(opts):
    """A backbone state dict without piece keys loads (pieces kept); a PETL state dict round-trips."""
    backbone = _nano().state_dict()
    model = apply_petl(_nano(), PETLConfig(**opts))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    pieces = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.load_state_dict(backbone)  # OFAModel.load_state_dict fills optional_state_keys
    for n, p in model.named_parameters():
        if n in pieces and n in model.optional_state_keys:
            assert torch.equal(p, pieces[n]), n
    full = model.state_dict()
    other = apply_petl(_nano(), PETLConfig(**opts))
    other.load_state_dict(full)
    torch.testing.assert_close(_forward(other.eval()), _forward(model.eval()), rtol=0, atol=0)


def test_flags_through_ofa_model_config():
    """`--lora --lora-r 4 ...` parsed from OFAConfig's dataclass reach apply_petl via build_model."""
    parser = argparse.ArgumentParser()
    gen_parser_from_dataclass(parser, OFAConfig(), delete_default=True)  # as fairseq does for models
    args = parser.parse_args(["--lora", "--lora-r", "4", "--lora-targets", "q_proj,v_proj", "--adapter",
                              "--adapter-dim", "8", "--decoder-prompt", "--decoder-prompt-length", "3"])
    args.arch = "ofa_nano"

    class Task:
        source_dictionary = target_dictionary = _dictionary()

    model = OFAFairseqModel.build_model(args, Task())
    assert model.petl_config.lora_r == 4 and model.petl_config.adapter_dim == 8
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "encoder.layers.0.self_attn.q_proj.lora_A" in names
    assert "decoder.layers.1.encoder_attn.v_proj.lora_B" in names
    assert "encoder.layers.0.self_attn.k_proj.lora_A" not in dict(model.named_parameters())
    assert "decoder.decoder_prompt_encoder.embedding.weight" in names
    assert "decoder.layers.0.post_ffn.up_proj.weight" in names
    assert model.decoder.layers[0].self_attn.prefix_provider is not None
    assert model.decoder.layers[0].encoder_attn.prefix_provider is None  # never on cross-attention
    assert names <= model.optional_state_keys


def test_frozen_trunk_skips_backward():
    """With every trunk parameter frozen no gradient reaches the ResNet (autograd skips it)."""
    model = apply_petl(_nano(), PETLConfig(adapter=True, adapter_dim=4))
    assert not any(p.requires_grad for p in model.encoder.embed_images.parameters())
    feats = {}
    model.encoder.embed_images.register_forward_hook(lambda m, i, o: feats.setdefault("out", o))
    out = _forward(model.train())
    assert out.requires_grad and not feats["out"].requires_grad
