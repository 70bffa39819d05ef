"""Unit tests of the PETL layer maths, each against an independent computation."""

import math

import pytest
import torch
from torch import nn

from ofa_ext.models.petl.adapter import Adapter
from ofa_ext.models.petl.bitfit import select_bitfit
from ofa_ext.models.petl.lora import LoRALinear
from ofa_ext.models.petl.prefix import PrefixProvider, PromptEncoder


def test_adapter_zero_init_is_identity_and_normal_is_not():
    x = torch.randn(3, 5, 16)
    assert torch.equal(Adapter(16, 4).eval()(x), x)
    a = Adapter(16, 4, init="normal").eval()
    assert not torch.equal(a(x), x)
    ref = x + (torch.relu(x @ a.down_proj.weight.T + a.down_proj.bias) @ a.up_proj.weight.T + a.up_proj.bias)
    torch.testing.assert_close(a(x), ref)
    assert abs(a.up_proj.weight.std().item() - 0.02) < 0.01


def test_adapter_dropout_only_in_training():
    a = Adapter(16, 4, dropout=0.5, init="normal")
    x = torch.randn(4, 16)
    assert torch.equal(a.eval()(x), a.eval()(x))
    torch.manual_seed(0)
    assert not torch.equal(a.train()(x), a.eval()(x))


def _lora(dtype=torch.float32, r=4, alpha=8.0):
    torch.manual_seed(0)
    base = nn.Linear(12, 10).to(dtype)
    layer = LoRALinear.from_linear(base, r=r, alpha=alpha)
    nn.init.normal_(layer.lora_B)  # make the delta non-zero
    return base, layer


def test_lora_shares_base_parameters_and_keeps_names():
    base, layer = _lora()
    assert layer.weight is base.weight and layer.bias is base.bias
    assert set(layer.state_dict()) == {"weight", "bias", "lora_A", "lora_B"}
    assert layer.lora_A.shape == (4, 12) and layer.lora_B.shape == (10, 4)
    assert isinstance(layer, nn.Linear)


def test_lora_init_is_identity_and_kaiming():
    base = nn.Linear(64, 32)
    layer = LoRALinear.from_linear(base, r=8)
    x = torch.randn(5, 64)
    torch.testing.assert_close(layer(x), base(x), rtol=0, atol=0)
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=√5) on fan_in 64
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.5 * bound
    assert torch.count_nonzero(layer.lora_B) == 0


def test_lora_forward_matches_dense_formula():
    base, layer = _lora()
    x = torch.randn(3, 12)
    ref = x @ (base.weight + layer.lora_B @ layer.lora_A * (8.0 / 4)).T + base.bias
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_lora_merge_equals_unmerged_and_unmerge_is_exact(dtype, tol):
    base, layer = _lora(dtype)
    original = base.weight.detach().clone()
    x = torch.randn(6, 12, dtype=dtype)
    y = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), y, rtol=tol, atol=tol)
    assert not torch.equal(layer.weight, original)
    layer.unmerge()
    assert torch.equal(layer.weight, original)  # bit-exact restore
    assert not layer.merged


def test_lora_merged_state_dict_holds_base_weight_and_eval_never_merges():
    base, layer = _lora()
    original = base.weight.detach().clone()
    layer.eval()
    assert not layer.merged  # eval() must not merge (loralib's double-add hazard)
    layer.merge()
    assert torch.equal(layer.state_dict()["weight"], original)
    fresh = LoRALinear(12, 10, r=4, alpha=8.0)
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(2, 12)
    torch.testing.assert_close(fresh(x), layer(x), rtol=1e-5, atol=1e-5)
    layer.load_state_dict(fresh.state_dict())  # loading into a merged layer unmerges first
    assert not layer.merged and torch.equal(layer.weight, original)


def test_lora_merge_and_unload_and_nonfinite_check():
    base, layer = _lora()
    x = torch.randn(4, 12)
    plain = layer.merge_and_unload()
    assert type(plain) is nn.Linear
    torch.testing.assert_close(plain(x), layer(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        layer.lora_B[0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        layer.merge()
    assert not layer.merged


def test_lora_rejects_bad_rank():
    with pytest.raises(ValueError, match="lora_r"):
        LoRALinear(4, 4, r=0)


@pytest.mark.parametrize("projection", [False, True])
def test_prompt_encoder_layout_matches_pi_tuning(projection):
    """Reference: π-Tuning builds [B, P, 2n, H, d] for all layers, permutes to [2n, B, H, P, d]
    and hands layer l the chunks (2l, 2l+1)."""
    P, n, H, d, B = 3, 4, 2, 5, 2
    enc = PromptEncoder(P, n, H, d, projection=projection, hidden_dim=7).eval()
    table = enc.trans(enc.embedding.weight) if projection else enc.embedding.weight  # [P, n·2·C]
    full = table.unsqueeze(0).expand(B, -1, -1).reshape(B, P, 2 * n, H, d).permute(2, 0, 3, 1, 4)
    for layer in range(n):
        k, v = PrefixProvider(enc, layer)(B)
        assert k.shape == (B, H, P, d)
        torch.testing.assert_close(k, full[2 * layer])
        torch.testing.assert_close(v, full[2 * layer + 1])
    assert enc(B).shape == (n, 2, B, H, P, d)


def test_prompt_encoder_length_zero_and_negative():
    k, v = PromptEncoder(0, 2, 2, 4)(3)[0]
    assert k.shape == (3, 2, 0, 4)
    with pytest.raises(ValueError, match="length"):
        PromptEncoder(-1, 2, 2, 4)


def test_bitfit_pi_tuning_rule_matches_spec():
    names = [
        "encoder.layers.0.self_attn_layer_norm.bias", "decoder.layers.0.encoder_attn_layer_norm.bias",
        "encoder.layers.0.final_layer_norm.bias", "encoder.layer_norm.bias", "decoder.layer_norm.bias",
        "encoder.layers.0.fc1.bias", "decoder.layers.1.fc2.bias",
        # not selected (pi_tuning.md §3.4)
        "encoder.layers.0.self_attn.q_proj.bias", "encoder.layernorm_embedding.bias",
        "encoder.patch_layernorm_embedding.bias", "encoder.layers.0.attn_ln.bias",
        "encoder.layers.0.ffn_layernorm.bias", "encoder.pos_q_linear.bias", "encoder.image_proj.bias",
        "encoder.embed_images.bn1.bias", "encoder.layers.0.fc1.weight", "encoder.layer_norm.weight",
    ]
    assert select_bitfit(names) == names[:7]
    every_bias = [n for n in names if n.endswith(".bias")]
    assert select_bitfit(names, "all") == every_bias
    with pytest.raises(ValueError, match="bitfit_scope"):
        select_bitfit(names, "some")
