"""π-Tuning's mixing (``--interpolation-mixing pi_tuning``) against a per-expert loop written as
the released code does it: K complete LoRA layers / K prompt encoders, each with its own dropout,
outputs summed with softmax weights. Train mode with dropout, same seed: the masks agree too.
Also: the experts' dropouts come from their files, collapse is exact, LoRA's dense delta."""

import pytest
import torch
from torch import nn

from ofa_ext.models.interpolation import InterpolationConfig, apply_interpolation, collapse, lora_delta_weights
from ofa_ext.models.interpolation_options import petl_flags
from ofa_ext.models.petl import read_piece_file
from ofa_ext.models.petl.adapter import Adapter
from ofa_ext.models.petl.lora import LoRALinear
from ofa_ext.models.petl.prefix import PrefixProvider, PromptEncoder
from ofa_ext.models.petl.toy import ToyOFA
from test_interpolation import batch, petl_model
from test_interpolation import make_experts as toy_experts

LORA = dict(lora=True, lora_r=2, lora_targets="q_proj,v_proj,fc1")
PREFIX = dict(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=3, decoder_prompt_length=2)


def make_experts(tmp_path, opts, per_expert):
    """One piece file per entry of ``per_expert`` (options that differ between the experts)."""
    return toy_experts(tmp_path, opts, k=len(per_expert), per_expert=per_expert)


def mixed(opts, paths, **kw):
    cfg = InterpolationConfig(interpolation_experts=",".join(paths), interpolation_granularity="slot", **kw)
    model = apply_interpolation(petl_model(opts), cfg)
    with torch.no_grad():  # a different weight vector in every group
        model.expert_mix.logits.copy_(torch.randn(model.expert_mix.logits.shape, generator=torch.Generator().manual_seed(5)))
    return model


def same_seed(fn, seed=11):
    torch.manual_seed(seed)
    return fn()


class LoopLoRA(nn.Module):
    """π-Tuning's ``--lora-num``: K complete LoRA layers, output Σ_k w_k layer_k(x)."""

    def __init__(self, layers, weights):
        super().__init__()
        self.layers, self.w = nn.ModuleList(layers), weights

    def forward(self, x):
        return sum(w * layer(x) for w, layer in zip(self.w, self.layers))


def test_lora_mix_equals_the_per_expert_loop(tmp_path):
    rates = [0.1, 0.3, 0.0]  # each expert's own lora_dropout, read from its file
    paths = make_experts(tmp_path, LORA, [{"lora_dropout": r} for r in rates])
    experts = [read_piece_file(p)[0] for p in paths]
    model = mixed(LORA, paths).train()
    ref = petl_model(LORA).train()
    mix = model.expert_mix
    groups = {m: g for m, p, g, kind in mix.targets if p == "lora_B"}
    assert {kind for *_, kind in mix.targets} == {"lora"} and len(groups) == 2 * 3 + 2 * 5  # projections
    assert mix.logits.shape == (2 * 2 + 2 * 3, 3)  # slots: self_attn, fc1 (+ encoder_attn) per layer
    for name, base in [(n, m) for n, m in ref.named_modules() if isinstance(m, LoRALinear)]:
        layers = []
        for k, e in enumerate(experts):
            plain = nn.Linear(base.in_features, base.out_features)
            plain.weight, plain.bias = base.weight, base.bias
            layer = LoRALinear.from_linear(plain, 2, 1.0, rates[k])
            with torch.no_grad():
                layer.lora_A.copy_(e[f"{name}.lora_A"])
                layer.lora_B.copy_(e[f"{name}.lora_B"])
            layers.append(layer)
        parent, _, child = name.rpartition(".")
        setattr(ref.get_submodule(parent), child, LoopLoRA(layers, mix.weights()[groups[name]].detach()))
    src, prev = batch()
    out = same_seed(lambda: model(src, prev))
    torch.testing.assert_close(out, same_seed(lambda: ref(src, prev)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, same_seed(lambda: model(src, prev), seed=12))  # dropout is on
    model.eval(), ref.eval()
    torch.testing.assert_close(model(src, prev), ref(src, prev), rtol=1e-5, atol=1e-5)


class LoopPrefix:
    """π-Tuning's ``--prompt-num``: layer l gets Σ_k softmax(row l)_k · encoder_k's dropped kv[l]."""

    def __init__(self, encoders, layer, weights):
        self.encoders, self.layer, self.w = encoders, layer, weights

    def __call__(self, bsz):
        kvs = [torch.stack(e.layer_kv(self.layer, bsz)) for e in self.encoders]
        kv = sum(w * x for w, x in zip(self.w, kvs))
        return kv[0], kv[1]


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_mix_per_layer_after_each_experts_dropout_equals_the_loop(tmp_path, projection):
    opts = {**PREFIX, "prompt_projection": projection, "encoder_prompt_dim": 8, "decoder_prompt_dim": 8}
    rates = [0.2, 0.5]
    paths = make_experts(tmp_path, opts, [{"prompt_dropout": r} for r in rates])
    experts = [read_piece_file(p)[0] for p in paths]
    model = mixed(opts, paths).train()  # this run's own --prompt-dropout is 0: the files' rates are used
    mix = model.expert_mix
    assert mix.logits.shape == (2 + 2, 2)  # one row per layer: 2 encoder + 2 decoder layers
    ref = petl_model(opts).train()
    loops = nn.ModuleList()  # the loop's encoders, to switch them to eval below
    for side in ("encoder", "decoder"):
        name = f"{side}.{side}_prompt_encoder"
        assert [d.p for d in model.get_submodule(name).expert_dropouts] == rates
        own = ref.get_submodule(name)
        encoders = []
        for k, e in enumerate(experts):
            enc = PromptEncoder(own.length, own.num_layers, own.num_heads, own.head_dim, projection, 8, rates[k])
            enc.load_state_dict({n[len(name) + 1:]: t for n, t in e.items() if n.startswith(name + ".")})
            encoders.append(enc)
        loops.extend(encoders)
        for attn_name, attn in ref.named_modules():
            if isinstance(getattr(attn, "prefix_provider", None), PrefixProvider) and attn.prefix_provider.encoder is own:
                row = mix.prompt_encoders[name][attn.prefix_provider.layer]
                attn.prefix_provider = LoopPrefix(encoders, attn.prefix_provider.layer, mix.weights()[row].detach())
    src, prev = batch()
    out = same_seed(lambda: model(src, prev))
    torch.testing.assert_close(out, same_seed(lambda: ref(src, prev)), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, same_seed(lambda: model(src, prev), seed=12))

    model.eval(), loops.eval()
    expected = ref.eval()(src, prev)
    torch.testing.assert_close(model(src, prev), expected, rtol=1e-5, atol=1e-6)
    # collapse: a prefix without projection whose table holds every layer's mix
    fresh = petl_model({**opts, "prompt_projection": False})
    with torch.no_grad():
        for n, t in collapse(model).items():
            fresh.get_parameter(n).copy_(t)
    torch.testing.assert_close(fresh.eval()(src, prev), expected, rtol=1e-5, atol=1e-6)


def test_lora_dense_delta_reproduces_the_mix(tmp_path):
    paths = make_experts(tmp_path, LORA, [{}, {}, {}])
    model = mixed(LORA, paths).eval()
    src, prev = batch()
    out = model(src, prev)
    deltas = lora_delta_weights(model)
    plain = ToyOFA(vocab=30, embed_dim=16, heads=2, ffn=32, layers=2)
    plain.load_state_dict(petl_model({}).state_dict())
    with torch.no_grad():
        for name, d in deltas.items():
            plain.get_submodule(name).weight.add_(d)
    torch.testing.assert_close(plain.eval()(src, prev), out, rtol=1e-5, atol=1e-5)
    # parameter mixing is another model: (Σ w B)(Σ w A) ≠ Σ w B A
    other = mixed(LORA, paths, interpolation_mixing="parameters").eval()
    assert not torch.allclose(other(src, prev), out, rtol=1e-3, atol=1e-3)


def test_expert_dropouts_come_from_the_files(tmp_path):
    adapter = dict(adapter=True, adapter_dim=4)
    paths = make_experts(tmp_path, adapter, [{"adapter_dropout": 0.2}] * 2)
    model = apply_interpolation(petl_model(adapter), InterpolationConfig(interpolation_experts=",".join(paths)))
    assert {m.dropout.p for m in model.modules() if isinstance(m, Adapter)} == {0.2}
    stored = read_piece_file(paths[0], tensors=False)[1]["petl_config"]
    assert "--adapter-dropout 0.2" in petl_flags(stored)

    (tmp_path / "p").mkdir()
    paths = make_experts(tmp_path / "p", PREFIX, [{"prompt_dropout": 0.2}] * 2)
    assert "--prompt-dropout 0.2" in petl_flags(read_piece_file(paths[0], tensors=False)[1]["petl_config"])
    for mixing in ("pi_tuning", "parameters"):
        model = apply_interpolation(petl_model(PREFIX), InterpolationConfig(
            interpolation_experts=",".join(paths), interpolation_mixing=mixing))
        encoders = [m for m in model.modules() if isinstance(m, PromptEncoder)]
        rates = [d.p for e in encoders for d in e.expert_dropouts] if mixing == "pi_tuning" else [e.dropout.p for e in encoders]
        assert set(rates) == {0.2}, mixing

    (tmp_path / "l").mkdir()
    paths = make_experts(tmp_path / "l", LORA, [{"lora_dropout": 0.1}, {"lora_dropout": 0.3}])
    model = apply_interpolation(petl_model(LORA), InterpolationConfig(interpolation_experts=",".join(paths)))
    assert {tuple(d.p for d in m.expert_dropouts) for m in model.modules() if isinstance(m, LoRALinear)} == {(0.1, 0.3)}
    with pytest.raises(ValueError, match=r"different --lora-dropout \[0.1, 0.3\].*parameters mixing"):
        apply_interpolation(petl_model(LORA), InterpolationConfig(interpolation_experts=",".join(paths),
                                                                  interpolation_mixing="parameters"))
    with pytest.raises(ValueError, match="--interpolation-mixing='outputs'"):
        apply_interpolation(petl_model(LORA), InterpolationConfig(interpolation_experts=",".join(paths),
                                                                  interpolation_mixing="outputs"))
