"""Expert interpolation on the real ofa_nano backbone with adapter + LoRA + prefix + BitFit pieces."""

import pytest
import torch

import ofa_ext.models.registered  # noqa: E402,F401  (registers model ofa; a broken import fails)

from fairseq.data import Dictionary  # noqa: E402

from ofa_ext.models.interpolation import ExpertMix, apply_interpolation, collapse, current_weights  # noqa: E402
from ofa_ext.models.ofa.model import OFAModel  # noqa: E402
from ofa_ext.models.petl import PETLConfig, apply_petl, load_pieces, save_pieces  # noqa: E402
from ofa_ext.models.registered import to_ofa_config  # noqa: E402

PIECES = dict(adapter=True, adapter_dim=4, adapter_init="normal", lora=True, lora_r=2,
              decoder_prompt=True, decoder_prompt_length=2, bitfit=True)


def _dict():
    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")
    return d


def nano(opts=PIECES):
    torch.manual_seed(0)
    model = OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), _dict())
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
    model = apply_interpolation(nano(), ExpertMix(experts=experts, logits=[float("-inf"), 0.0]))
    ref = nano()
    load_pieces(ref, experts[1])
    assert torch.equal(logits(model, s), logits(ref, s))

    model = apply_interpolation(nano(), ExpertMix(experts=experts, logits=[0.4, -0.3], granularity="slot"))
    out = logits(model, s)
    fresh = nano()
    with torch.no_grad():
        for n, t in collapse(model).items():
            fresh.get_parameter(n).copy_(t)
    torch.testing.assert_close(logits(fresh, s), out, rtol=1e-5, atol=1e-5)
    assert current_weights(model).shape[1] == 2


def test_gradients_through_ofa_nano(experts):
    model = apply_interpolation(nano(), ExpertMix(experts=experts)).train()
    ll(model, sample()).sum().backward()
    assert model.expert_mix.logits.grad.abs().sum() > 0
