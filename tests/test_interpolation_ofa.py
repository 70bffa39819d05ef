"""Expert interpolation on the real ofa_nano backbone with adapter + LoRA + prefix + BitFit pieces;
checkpoints of one mixing are refused by the other with one line (older checkpoints mix parameters)."""

import pytest
import torch
from fairseq.data import Dictionary

from ofa_ext.models.interpolation import (
    MIXING_KEY, ExpertMix, apply_interpolation, collapse, collapsed_petl_config, current_weights,
)
from ofa_ext.models.petl import PETLConfig, apply_petl, load_pieces, save_pieces
from ofa_ext.models.registered import OFAFairseqModel, to_ofa_config

PIECES = dict(adapter=True, adapter_dim=4, adapter_init="normal", lora=True, lora_r=2,
              decoder_prompt=True, decoder_prompt_length=2, bitfit=True)


def _dict():
    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")
    return d


def nano(opts=PIECES):
    torch.manual_seed(0)
    model = OFAFairseqModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), _dict())
    return apply_petl(model, PETLConfig(**opts)).eval()


def sample(bsz=3):
    d = _dict()
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, len(d), (bsz, 6), generator=g)
    src[:, 0], src[:, -1] = d.bos(), d.eos()
    src[0, -2:] = d.pad()
    prev = torch.randint(4, len(d), (bsz, 4), generator=g)
    net = {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1), "prev_output_tokens": prev,
           "patch_images": torch.randn(bsz, 3, 32, 32, generator=g), "patch_masks": torch.ones(bsz, dtype=torch.bool)}
    return {"net_input": net, "target": torch.randint(4, len(d), (bsz, 4), generator=g), "nsentences": bsz}


def logits(m, s):
    return m(**s["net_input"])[0]


def ll(m, s):
    return torch.log_softmax(logits(m, s), -1).gather(-1, s["target"].unsqueeze(-1)).squeeze(-1).sum(-1)


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nano_experts")
    paths = []
    for k in range(2):
        m = nano()
        g = torch.Generator().manual_seed(10 + k)
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad:
                    p.add_(0.2 * torch.randn(p.shape, generator=g))
        paths.append(str(folder / f"e{k}.safetensors"))
        save_pieces(m, paths[-1], arch="ofa_nano", task=f"t{k}")
    return paths


def test_one_hot_and_collapse_on_ofa_nano(experts):
    s = sample()
    ref = nano()
    load_pieces(ref, experts[1])
    model = apply_interpolation(nano(), ExpertMix(experts=experts, logits=[float("-inf"), 0.0], mixing="parameters"))
    assert torch.equal(logits(model, s), logits(ref, s))
    model = apply_interpolation(nano(), ExpertMix(experts=experts, logits=[float("-inf"), 0.0]))
    torch.testing.assert_close(logits(model, s), logits(ref, s), rtol=1e-5, atol=1e-6)  # LoRA: K·r columns

    model = apply_interpolation(nano(), ExpertMix(experts=experts, logits=[0.4, -0.3], granularity="slot"))
    out = logits(model, s)
    cfg = collapsed_petl_config(model)
    assert (cfg.lora_r, cfg.lora_alpha) == (2 * 2, 2.0)
    fresh = nano({**PIECES, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha})
    with torch.no_grad():
        for n, t in collapse(model).items():
            fresh.get_parameter(n).copy_(t)
    torch.testing.assert_close(logits(fresh, s), out, rtol=1e-5, atol=1e-5)
    assert current_weights(model).shape[1] == 2


def test_gradients_through_ofa_nano(experts):
    model = apply_interpolation(nano(), ExpertMix(experts=experts)).train()
    ll(model, sample()).sum().backward()
    assert model.expert_mix.logits.grad.abs().sum() > 0


def test_a_checkpoint_loads_with_the_mixing_it_was_trained_with(experts):
    """Checkpoints written before --interpolation-mixing (no expert_mix.mixing) mix parameters; a
    model built with the other mixing rebuilds its mix as the checkpoint's (fairseq fills a stored
    config's missing option with the new default, and overrides cannot reach missing keys)."""
    s = sample()
    parameters = apply_interpolation(nano(), ExpertMix(experts=experts, logits=[0.4, -0.3], mixing="parameters", granularity="slot"))
    released = apply_interpolation(nano(), ExpertMix(experts=experts, logits=[0.4, -0.3], granularity="slot"))
    assert not torch.allclose(logits(parameters, s), logits(released, s), rtol=1e-4, atol=1e-4)
    # other groups: pi_tuning's prefix rows are its layers' self_attn slots, parameters' one per table
    assert released.expert_mix.logits.shape[0] != parameters.expert_mix.logits.shape[0]
    old = {k: v for k, v in parameters.state_dict().items() if k != MIXING_KEY}  # what ofa_ext wrote before
    for start in ("parameters", "pi_tuning"):
        again = apply_interpolation(nano(), ExpertMix(experts=experts, mixing=start, granularity="slot"))
        again.load_state_dict(old, strict=True)
        assert again.expert_mix.spec.mixing == "parameters" and int(again.expert_mix.mixing) == 1
        assert torch.equal(logits(again, s), logits(parameters, s)), start
    again = apply_interpolation(nano(), ExpertMix(experts=experts, mixing="parameters", granularity="slot"))
    again.load_state_dict(released.state_dict(), strict=True)
    assert again.expert_mix.spec.mixing == "pi_tuning"
    assert torch.equal(logits(again, s), logits(released, s))
    again.train()
    ll(again, sample()).sum().backward()  # still trains: logits and experts
    assert again.expert_mix.logits.grad.abs().sum() > 0
