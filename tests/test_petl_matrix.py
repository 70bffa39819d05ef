"""Behaviour matrix: every (method, options) row × every tiny model.

Models: ``toy`` (the hook contract in ``ofa_ext/models/petl/toy.py``) and, once registered, the
real ``ofa_nano`` backbone. Each behaviour is tested on every row.
"""

import copy
import logging

import pytest
import torch

from ofa_ext.models.petl import (
    PETLConfig, apply_petl, merge_and_unload, merge_lora, piece_state_dict, read_piece_file,
    save_pieces, trainable_summary, unmerge_lora,
)
from ofa_ext.models.petl.lora import LoRALinear
from ofa_ext.models.petl.toy import ToyOFA


def _build_toy():
    torch.manual_seed(0)
    model = ToyOFA(vocab=50, embed_dim=32, heads=4, ffn=64, layers=2)
    g = torch.Generator().manual_seed(2)
    src = torch.randint(2, 50, (3, 7), generator=g)
    src[0, -2:] = 1  # padding
    prev = torch.randint(2, 50, (3, 5), generator=g)
    batch = {"src": src, "prev": prev, "target": torch.randint(2, 50, (3, 5), generator=g)}

    def run(m, b, incremental=False):
        return (m.decode_incremental if incremental else m)(b["src"], b["prev"])

    return model, batch, run


def _build_ofa_nano():
    from fairseq.data import Dictionary

    from ofa_ext.models.ofa.model import OFAModel
    from ofa_ext.models.registered import to_ofa_config

    d = Dictionary()
    for i in range(60):
        d.add_symbol(f"w{i}")
    torch.manual_seed(0)
    model = OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), d)
    g = torch.Generator().manual_seed(2)
    B, V = 3, len(d)
    src = torch.randint(4, V, (B, 6), generator=g)
    src[:, 0], src[:, -1] = d.bos(), d.eos()
    src[0, -2:] = d.pad()
    prev = torch.randint(4, V, (B, 5), generator=g)
    prev[:, 0] = d.bos()
    batch = {
        "src": src, "lengths": src.ne(d.pad()).sum(1), "prev": prev,
        "images": torch.randn(B, 3, 32, 32, generator=g), "masks": torch.ones(B, dtype=torch.bool),
        "target": torch.randint(4, V, (B, 5), generator=g),
    }

    def run(m, b, incremental=False):
        if not incremental:
            return m(b["src"], b["lengths"], b["prev"], patch_images=b["images"], patch_masks=b["masks"])[0]
        enc = m.encoder(b["src"], src_lengths=b["lengths"], patch_images=b["images"], patch_masks=b["masks"])
        state: dict = {}
        steps = [m.decoder(b["prev"][:, : t + 1], encoder_out=enc, incremental_state=state)[0]
                 for t in range(b["prev"].shape[1])]
        return torch.cat(steps, 1)

    return model, batch, run


BUILDERS = {"toy": _build_toy, "ofa_nano": _build_ofa_nano}
try:  # the real backbone, once it is in the tree
    import ofa_ext.models.registered  # noqa: F401
except ImportError:  # pragma: no cover
    del BUILDERS["ofa_nano"]
KINDS = list(BUILDERS)


def build_kind(kind):
    """(model with a fixed backbone, batch dict with a `target`, run(model, batch, incremental=False))."""
    return BUILDERS[kind]()

ROWS = {
    # name: (options, output unchanged at init)
    "adapter": (dict(adapter=True, adapter_dim=8), True),
    "adapter_normal_ffn": (dict(adapter=True, adapter_dim=8, adapter_init="normal", adapter_sites="ffn"), False),
    "prefix0": (dict(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=0, decoder_prompt_length=0), True),
    "prefix": (dict(encoder_prompt=True, decoder_prompt=True, encoder_prompt_length=3, decoder_prompt_length=2), False),
    "prefix_proj_dec": (dict(decoder_prompt=True, decoder_prompt_length=4, prompt_projection=True,
                             decoder_prompt_dim=16, prompt_dropout=0.2), False),
    "lora": (dict(lora=True, lora_r=4), True),
    "lora_ffn": (dict(lora=True, lora_r=2, lora_alpha=4.0, lora_targets="q_proj,v_proj,fc1,fc2"), True),
    "bitfit": (dict(bitfit=True), True),
    "bitfit_all": (dict(bitfit=True, bitfit_scope="all"), True),
    "adapter+lora": (dict(adapter=True, adapter_dim=4, lora=True, lora_r=2, train_layernorm=True), True),
    "everything": (dict(adapter=True, adapter_dim=4, lora=True, lora_r=2, encoder_prompt=True,
                        encoder_prompt_length=2, bitfit=True, train_head=True), False),
}


def _perturb(model):
    """Give every trainable tensor non-trivial values (as after training)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.dtype))


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.mark.parametrize("row", ROWS)
def test_init_output(kind, row):
    opts, unchanged = ROWS[row]
    model, batch, run = build_kind(kind)
    model.eval()
    ref = run(model, batch)
    apply_petl(model, PETLConfig(**opts)).eval()
    out = run(model, batch)
    if unchanged:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    else:
        assert (out - ref).abs().max() > 1e-5


@pytest.mark.parametrize("row", ROWS)
def test_gradients_reach_only_pieces_and_saved_set_is_trainable_set(kind, row, tmp_path):
    model, batch, run = build_kind(kind)
    apply_petl(model, PETLConfig(**ROWS[row][0]))
    model.train()
    run(model, batch).float().logsumexp(-1).mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trainable and with_grad == trainable  # every piece is used in the forward, nothing else gets grads
    assert set(model.optional_state_keys) <= set(dict(model.named_parameters()))
    path = tmp_path / "p.safetensors"
    save_pieces(model, str(path), arch=kind, task="unit")
    tensors, meta = read_piece_file(str(path))
    assert set(tensors) == trainable == set(piece_state_dict(model))
    assert meta["task"] == "unit" and meta["arch"] == kind


@pytest.mark.parametrize("row", ROWS)
def test_save_load_onto_fresh_model_reproduces_outputs(kind, row, tmp_path):
    cfg = PETLConfig(**ROWS[row][0])
    model, batch, run = build_kind(kind)
    apply_petl(model, cfg)
    _perturb(model)
    model.eval()
    ref = run(model, batch)
    path = str(tmp_path / "p.safetensors")
    save_pieces(model, path, cfg, arch=kind)
    fresh, _, _ = build_kind(kind)
    apply_petl(fresh, PETLConfig(**{**ROWS[row][0], "petl_load": path})).eval()  # load through the config
    torch.testing.assert_close(run(fresh, batch), ref, rtol=0, atol=0)
    # and through the config stored in the file alone
    fresh2, _, _ = build_kind(kind)
    apply_petl(fresh2, PETLConfig(petl_load=path)).eval()
    torch.testing.assert_close(run(fresh2, batch), ref, rtol=0, atol=0)


@pytest.mark.parametrize("row", [r for r in ROWS if "lora" in ROWS[r][0] or "lora" in r])
def test_lora_merged_equals_unmerged_and_unmerge_restores(kind, row):
    model, batch, run = build_kind(kind)
    apply_petl(model, PETLConfig(**ROWS[row][0]))
    _perturb(model)
    model.eval()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = run(model, batch)
    merge_lora(model)
    torch.testing.assert_close(run(model, batch), ref, rtol=1e-5, atol=1e-5)
    unmerge_lora(model)
    for n, p in model.named_parameters():
        assert torch.equal(p, base[n]), n
    unloaded = merge_and_unload(copy.deepcopy(model))
    assert not any(isinstance(m, LoRALinear) for m in unloaded.modules())
    assert not any("lora_" in n for n in unloaded.state_dict())
    torch.testing.assert_close(run(unloaded, batch), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", ["prefix", "prefix_proj_dec", "everything"])
def test_prefix_incremental_decoding_equals_full(kind, row):
    model, batch, run = build_kind(kind)
    apply_petl(model, PETLConfig(**ROWS[row][0]))
    _perturb(model)
    model.eval()
    full = run(model, batch)
    step = run(model, batch, incremental=True)
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_two_methods_combined_train(kind):
    model, batch, run = build_kind(kind)
    apply_petl(model, PETLConfig(adapter=True, adapter_dim=8, lora=True, lora_r=4))
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    target = batch["target"]
    for _ in range(8):
        logits = run(model, batch).float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_no_flag_returns_model_unchanged(kind):
    model, _, _ = build_kind(kind)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    assert apply_petl(model, PETLConfig()) is model
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert trainable_summary(model)["percent"] == 100.0


def test_logs_table_and_counts(kind, caplog):
    model, _, _ = build_kind(kind)
    with caplog.at_level(logging.INFO, logger="ofa_ext.models.petl.inject"):
        apply_petl(model, PETLConfig(lora=True, lora_r=2, adapter=True, adapter_dim=4))
    text = caplog.text
    assert "q_proj" in text and "post_ffn" in text and "trainable parameters" in text
    s = trainable_summary(model)
    assert f"{s['trainable']:,}" in text and 0 < s["percent"] < 100
