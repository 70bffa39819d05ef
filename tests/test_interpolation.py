"""Expert interpolation on the toy PETL model, both mixings: one-hot = that expert, gradients,
collapse = wrapper, composition as data, checkpoints, errors. (π-Tuning's mixing against a
per-expert loop: test_interpolation_released.py.)"""

import json
import math
from pathlib import Path

import pytest
import torch

from ofa_ext.models.interpolation import (
    ExpertMix,
    InterpolationConfig,
    apply_interpolation,
    collapse,
    collapsed_petl_config,
    current_mix,
    current_weights,
    similarity_logits,
    unload_interpolation,
)
from ofa_ext.models.petl import PETLConfig, apply_petl, load_pieces, read_piece_file, save_pieces
from ofa_ext.models.petl.toy import ToyOFA

METHODS = {
    "adapter": dict(adapter=True, adapter_dim=4),
    "lora": dict(lora=True, lora_r=2),
    "prefix": dict(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=3, decoder_prompt_length=2),
    "bitfit": dict(bitfit=True),
    "tied_head": dict(adapter=True, adapter_dim=2, train_head=True),
}


MIXINGS = ("pi_tuning", "parameters")


def petl_model(opts, seed=0):
    torch.manual_seed(seed)  # same backbone for every call
    model = ToyOFA(vocab=30, embed_dim=16, heads=2, ffn=32, layers=2)
    return apply_petl(model, PETLConfig(**opts)).eval()


def make_experts(tmp_path, opts, k=3, tasks=("refcoco", "refcocoplus", "refcocog", "extra"), per_expert=None):
    """k piece files of perturbed pieces; ``per_expert[i]``: options only expert i was trained with."""
    paths = []
    for i in range(k):
        m = petl_model({**opts, **(per_expert[i] if per_expert else {})})
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad:
                    p.add_(0.3 * torch.randn(p.shape, generator=g))
        path = str(tmp_path / f"expert{i}.safetensors")
        save_pieces(m, path, arch="toy", task=tasks[i])
        paths.append(path)
    return paths


def batch():
    g = torch.Generator().manual_seed(7)
    src = torch.randint(2, 30, (2, 6), generator=g)
    src[1, -2:] = 1
    return src, torch.randint(2, 30, (2, 4), generator=g)


def interp_cfg(paths, **kw):
    cfg = InterpolationConfig(interpolation_experts=",".join(paths))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("mixing", MIXINGS)
@pytest.mark.parametrize("method", METHODS)
def test_one_hot_weights_equal_that_expert(tmp_path, method, mixing):
    paths = make_experts(tmp_path, METHODS[method])
    src, prev = batch()
    for j, path in enumerate(paths):
        logits = ",".join("0" if i == j else "-inf" for i in range(3))
        model = apply_interpolation(petl_model(METHODS[method]), interp_cfg(
            paths, interpolation_init="logits", interpolation_logits=logits, interpolation_mixing=mixing))
        assert torch.equal(current_weights(model), torch.eye(3)[j])
        ref = petl_model(METHODS[method])
        load_pieces(ref, path)
        if method == "lora" and mixing == "pi_tuning":  # K·r columns, zeros for the others: other sum order
            torch.testing.assert_close(model(src, prev), ref(src, prev), rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(model(src, prev), ref(src, prev)), (method, j)


def expected_collapse(name, experts, w, mixing, model):
    """The collapsed value of piece ``name`` computed from the files alone."""
    if mixing == "pi_tuning" and name.endswith(".lora_A"):
        return torch.cat([e[name] for e in experts])  # [K·r, in]
    if mixing == "pi_tuning" and name.endswith(".lora_B"):
        g = next(g for m, p, g, _ in model.expert_mix.targets if f"{m}.{p}" == name)
        return torch.cat([model.expert_mix.weights()[g][k].detach() * e[name] for k, e in enumerate(experts)], 1)
    return sum(w[k] * experts[k][name] for k in range(len(experts)))


@pytest.mark.parametrize("mixing", MIXINGS)
@pytest.mark.parametrize("method", METHODS)
def test_collapse_and_unload_match_the_wrapper(tmp_path, method, mixing):
    opts = METHODS[method]
    paths = make_experts(tmp_path, opts)
    model = apply_interpolation(petl_model(opts), interp_cfg(paths, interpolation_init="logits", interpolation_logits="0.3,-1,0.9",
                                                             interpolation_mixing=mixing, interpolation_granularity="slot"))
    src, prev = batch()
    out = model(src, prev)
    pieces = collapse(model)
    cfg = collapsed_petl_config(model)
    tensors, _ = read_piece_file(paths[0])
    assert set(pieces) == set(tensors)
    w = current_weights(model)
    experts = [read_piece_file(p)[0] for p in paths]
    for name, t in pieces.items():  # independent: the files and the weights
        if mixing == "parameters" or "prompt_encoder" not in name:  # pi_tuning prefixes: per layer, below
            ww = w if w.dim() == 1 else None
            if ww is None:
                g = next(g for m, p, g, _ in model.expert_mix.targets if f"{m}.{p}" == name)
                ww = w[g]
            torch.testing.assert_close(t, expected_collapse(name, experts, ww, mixing, model), rtol=1e-6, atol=1e-7)
    fresh = petl_model({**opts, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha} if "lora" in opts else opts)
    with torch.no_grad():
        for name, t in pieces.items():
            fresh.get_parameter(name).copy_(t)
    torch.testing.assert_close(fresh(src, prev), out, rtol=1e-5, atol=1e-6)

    unload_interpolation(model)
    assert not hasattr(model, "expert_mix")
    torch.testing.assert_close(model(src, prev), out, rtol=1e-5, atol=1e-6)
    out_path = str(tmp_path / "collapsed.safetensors")
    save_pieces(model, out_path, arch="toy", task="mix")  # a normal piece file
    saved, meta = read_piece_file(out_path)
    assert set(saved) == set(tensors)
    reloaded = petl_model({k: getattr(meta["petl_config"], k) for k in opts} | {"lora_alpha": meta["petl_config"].lora_alpha})
    load_pieces(reloaded, out_path)
    torch.testing.assert_close(reloaded(src, prev), out, rtol=1e-5, atol=1e-6)
    if method == "lora" and mixing == "pi_tuning":
        assert (meta["petl_config"].lora_r, meta["petl_config"].lora_alpha) == (3 * 2, 3.0)
    if method == "tied_head":
        dec = model.decoder.output_projection.weight
        assert dec is model.encoder.embed_tokens.weight


@pytest.mark.parametrize("train_experts", [True, False])
def test_gradients_reach_logits_and_experts(tmp_path, train_experts):
    opts = METHODS["adapter"]
    paths = make_experts(tmp_path, opts)
    model = apply_interpolation(petl_model(opts), interp_cfg(paths, interpolation_freeze_experts=not train_experts))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "expert_mix.logits" in trainable
    assert all(".original" not in n for n in trainable)
    assert any(n.endswith(".experts") for n in trainable) == train_experts
    src, prev = batch()
    model(src, prev).logsumexp(-1).sum().backward()
    assert model.expert_mix.logits.grad is not None and model.expert_mix.logits.grad.abs().sum() > 0
    for n, p in model.named_parameters():
        if n.endswith(".experts"):
            assert (p.grad is not None and p.grad.abs().sum() > 0) == train_experts, n
        if n.endswith(".original"):
            assert p.grad is None


def test_weights_only_frozen(tmp_path):
    paths = make_experts(tmp_path, METHODS["lora"], k=2)
    model = apply_interpolation(petl_model(METHODS["lora"]), interp_cfg(paths, interpolation_freeze_weights=True,
                                                                       interpolation_freeze_experts=True))
    assert not any(p.requires_grad for p in model.parameters())


def test_similarity_init_and_top_k(tmp_path):
    paths = make_experts(tmp_path, METHODS["adapter"], k=3)
    sims = [1.0, 0.5, 0.25]
    model = apply_interpolation(petl_model(METHODS["adapter"]), interp_cfg(
        paths, interpolation_init="similarity", interpolation_similarities="1.0,0.5,0.25"))
    torch.testing.assert_close(current_weights(model), torch.tensor(sims) / sum(sims))
    model = apply_interpolation(petl_model(METHODS["adapter"]), interp_cfg(
        paths, interpolation_init="similarity", interpolation_similarities="1.0,0.5,0.25", interpolation_temperature=0.5))
    sq = torch.tensor(sims) ** 2
    torch.testing.assert_close(current_weights(model), sq / sq.sum())
    # top-k from the JSON written by ofa-task-similarity --target (matched by task names)
    table = tmp_path / "top.json"
    table.write_text(json.dumps({"target": "refcocog", "similarities": {"refcoco": 0.3, "refcocoplus": 0.9, "refcocog": 1.0}}))
    model = apply_interpolation(petl_model(METHODS["adapter"]), interp_cfg(
        paths, interpolation_init="similarity", interpolation_similarities=str(table), interpolation_top_k=2))
    mix = current_mix(model)
    assert mix.names == ["refcocog", "refcocoplus"] and mix.experts == [paths[2], paths[1]]
    torch.testing.assert_close(current_weights(model), torch.tensor([1.0, 0.9]) / 1.9)
    assert similarity_logits([1.0, math.e], 2.0) == [0.0, 0.5]


@pytest.mark.parametrize("granularity,groups", [("model", 1), ("layer", 4), ("slot", 8), ("tensor", 32)])
def test_granularity(tmp_path, granularity, groups):
    paths = make_experts(tmp_path, METHODS["adapter"], k=2)
    model = apply_interpolation(petl_model(METHODS["adapter"]), interp_cfg(paths, interpolation_granularity=granularity))
    assert model.expert_mix.logits.shape == (groups, 2)
    mix = current_mix(model)
    again = ExpertMix.from_json(mix.to_json())
    assert again == mix and again.granularity == granularity


def test_expert_mix_json_roundtrip_and_apply(tmp_path):
    paths = make_experts(tmp_path, METHODS["prefix"], k=2)
    mix = ExpertMix(experts=paths, logits=[0.2, -0.4], train_experts=False, names=["a", "b"])
    path = tmp_path / "mix.json"
    mix.to_json(path)
    loaded = ExpertMix.from_json(path)
    assert loaded == mix
    model = apply_interpolation(petl_model(METHODS["prefix"]), loaded)
    torch.testing.assert_close(current_weights(model), torch.tensor([0.2, -0.4]).softmax(-1))
    assert current_mix(model).logits == pytest.approx([0.2, -0.4])
    w = ExpertMix(experts=paths).weights()
    assert w == [0.5, 0.5]


def test_state_dict_roundtrip_and_plain_checkpoint_loads(tmp_path):
    opts = METHODS["bitfit"]
    paths = make_experts(tmp_path, opts, k=2)
    cfg = interp_cfg(paths, interpolation_init="logits", interpolation_logits="1,0")
    model = apply_interpolation(petl_model(opts), cfg)
    with torch.no_grad():
        model.expert_mix.logits.add_(0.7)
        model.expert_mix.logits[0, 1] -= 2.0
    src, prev = batch()
    other = apply_interpolation(petl_model(opts), cfg)
    other.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(other(src, prev), model(src, prev))
    # a plain (non-interpolated) model's state dict, e.g. the backbone checkpoint, still loads: its piece
    # values go to the unused originals; only the mix's own tensors are missing (and declared optional)
    plain = petl_model(opts).state_dict()
    before = model(src, prev)
    res = model.load_state_dict(plain, strict=False)
    assert res.unexpected_keys == []
    assert res.missing_keys and set(res.missing_keys) <= model.optional_state_keys
    assert all(k in ("expert_mix.logits", "expert_mix.mixing") or k.endswith(".experts") for k in res.missing_keys)
    assert torch.equal(model(src, prev), before)


def test_errors(tmp_path):
    opts = METHODS["adapter"]
    paths = make_experts(tmp_path, opts, k=2)
    (tmp_path / "wide").mkdir()
    (tmp_path / "l").mkdir()
    other = make_experts(tmp_path / "wide", dict(adapter=True, adapter_dim=6), k=1)
    with pytest.raises(ValueError, match=r"expert0\.safetensors and .*wide/expert0\.safetensors.*adapter_dim"):
        apply_interpolation(petl_model(opts), interp_cfg([paths[0], other[0]]))
    with pytest.raises(ValueError, match=r"expert .*wide/expert0\.safetensors: shape mismatch"):
        apply_interpolation(petl_model(opts), interp_cfg(other))
    lora_path = make_experts(tmp_path / "l", METHODS["lora"], k=1)
    with pytest.raises(ValueError, match="different PETL setups"):
        apply_interpolation(petl_model(opts), interp_cfg([paths[0], lora_path[0]]))
    with pytest.raises(ValueError, match="does not match the model"):
        apply_interpolation(petl_model(opts), interp_cfg(lora_path))
    with pytest.raises(ValueError, match="at least one expert"):
        apply_interpolation(petl_model(opts), interp_cfg([]))
    with pytest.raises(ValueError, match="top-k=3 is larger than the number of experts"):
        apply_interpolation(petl_model(opts), interp_cfg(paths, interpolation_similarities="1,0.5", interpolation_top_k=3))
    with pytest.raises(ValueError, match="2 interpolation logits for 1"):
        ExpertMix(experts=paths[:1], logits=[0.0, 1.0]).validate()
    with pytest.raises(ValueError, match="3 values for 2 experts"):
        apply_interpolation(petl_model(opts), interp_cfg(paths, interpolation_init="similarity", interpolation_similarities="1,2,3"))
    with pytest.raises(ValueError, match="interpolation-init"):
        apply_interpolation(petl_model(opts), interp_cfg(paths, interpolation_init="magic"))
    with pytest.raises(ValueError, match="granularity"):
        apply_interpolation(petl_model(opts), interp_cfg(paths, interpolation_granularity="row"))
    with pytest.raises(ValueError, match="same file twice"):
        apply_interpolation(petl_model(opts), interp_cfg([paths[0], paths[0]]))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        apply_interpolation(petl_model(opts), interp_cfg(["nowhere.safetensors"]))
    model = apply_interpolation(petl_model(opts), interp_cfg(paths))
    with pytest.raises(RuntimeError, match="already interpolated"):
        apply_interpolation(model, interp_cfg(paths))
    with pytest.raises(RuntimeError, match="no expert interpolation"):
        current_weights(petl_model(opts))


def test_deepcopy_keeps_one_shared_mix(tmp_path):
    """fairseq's EMA deep-copies the model: the copy must mix with its own logits."""
    import copy

    paths = make_experts(tmp_path, METHODS["adapter"], k=2)
    model = apply_interpolation(petl_model(METHODS["adapter"]), interp_cfg(paths))
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.expert_mix.logits.copy_(torch.tensor([[0.0, float("-inf")]]))
    assert torch.equal(current_weights(model), torch.tensor([0.5, 0.5]))
    ref = petl_model(METHODS["adapter"])
    load_pieces(ref, paths[0])
    src, prev = batch()
    assert torch.equal(clone(src, prev), ref(src, prev))


def test_structure_only_rebuild_loads_a_trained_checkpoint_without_expert_files(tmp_path):
    paths = make_experts(tmp_path, METHODS["lora"], k=3)
    cfg = interp_cfg(paths, interpolation_similarities="1,0.9,0.2", interpolation_top_k=2,
                     interpolation_init="similarity", interpolation_granularity="slot")
    trained = apply_interpolation(petl_model(METHODS["lora"]), cfg)
    state = trained.state_dict()
    for p in paths:
        Path(p).unlink()  # evaluation machine: no expert files
    rebuilt = apply_interpolation(petl_model(METHODS["lora"]), cfg, structure_only=True)
    rebuilt.load_state_dict(state, strict=True)
    src, prev = batch()
    assert torch.equal(rebuilt(src, prev), trained(src, prev))
    torch.testing.assert_close(current_weights(rebuilt), current_weights(trained))
