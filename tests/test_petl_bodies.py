"""The PETL matrix over bodies: every (method, options) row × tiny HF bodies and OFA's encoder body.

Behaviours per row: output at init, gradients reach exactly the trainable set = the saved set,
save → load onto a fresh body reproduces outputs, LoRA merged = unmerged; plus input prompts with
padding, piece files of another body, zero-match errors and trainable modules beside a body.
"""

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bodies_helpers import image_batch, save_tiny, text_batch
from ofa_ext import api
from ofa_ext.models.bodies import SiteTable
from ofa_ext.models.bodies.hf import load_hf_body
from ofa_ext.models.bodies.ofa import OFABody
from ofa_ext.models.petl import PETLConfig, piece_state_dict, read_piece_file
from ofa_ext.models.petl.lora import LoRALinear

ALL_LORA = "q_proj,k_proj,v_proj,out_proj,fc1,fc2"
ROWS = {
    # name: (options, output unchanged at init)
    "lora": (dict(lora=True, lora_r=4, lora_targets=ALL_LORA), True),
    "adapter": (dict(adapter=True, adapter_dim=8), True),
    "adapter_normal_ffn": (dict(adapter=True, adapter_dim=8, adapter_init="normal", adapter_sites="ffn"), False),
    "bitfit": (dict(bitfit=True), True),
    "bitfit_all": (dict(bitfit=True, bitfit_scope="all"), True),
    "input_prompt": (dict(input_prompt_length=3), False),
    "everything": (dict(lora=True, lora_r=2, lora_targets="q_proj,v_proj,out_proj", adapter=True, adapter_dim=4,
                        input_prompt_length=2, bitfit=True, train_layernorm=True), False),
}
NO_PROMPT = {"swin"}  # prompts do not fit Swin's window grid (an error, tested below)


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf"))


def _ofa_body():
    from conftest import small_dictionary
    from ofa_ext.models.ofa.model import OFAModel
    from ofa_ext.models.registered import to_ofa_config

    torch.manual_seed(0)
    model = OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), small_dictionary())
    return OFABody(model.encoder, images=False)  # text inputs: the image path is not on it


def build(kind, root):
    """(fresh body with fixed weights, its native input, run(body) -> hidden)."""
    if kind == "ofa_encoder":
        body = _ofa_body()
        ids = torch.randint(4, 60, (3, 6), generator=torch.Generator().manual_seed(2))
        ids[0, -2:] = 1
        x = ids
    elif kind in ("clip-text", "clip-vision"):
        body = load_hf_body(save_tiny("clip", root), tower=kind.split("-")[1])
        x = text_batch()[0] if kind == "clip-text" else image_batch(16)
    else:
        body = load_hf_body(save_tiny(kind, root))
        x = text_batch()[0] if body.modality == "text" else image_batch(32 if kind == "swin" else 16)
    if kind == "clip-text":
        return body, x, lambda b: b(*b.embed(x, x.eq(0)))
    return body, x, lambda b: b(*b.embed(x))


KINDS = ["bert", "vit", "swin", "clip-text", "clip-vision", "ofa_encoder"]
# OFA's attention takes prefixes (a `prefix_provider` hook); HF attention does not (an error, tested below)
ROWS["prefix_ofa"] = (dict(encoder_prompt=True, encoder_prompt_length=3, input_prompt_length=2), False)
CASES = [(k, r) for k in KINDS for r in ROWS
         if not (k in NO_PROMPT and "input_prompt_length" in ROWS[r][0]) and (r != "prefix_ofa" or k == "ofa_encoder")]


def _perturb(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.dtype))


@pytest.mark.parametrize("kind,row", CASES)
def test_init_output_and_trainable_set_is_saved_set(kind, row, hf_root, tmp_path):
    opts, unchanged = ROWS[row]
    body, _, run = build(kind, hf_root)
    with torch.no_grad():
        ref = run(body)
    api.apply_petl(body, **opts)
    body.eval()
    with torch.no_grad():
        out = run(body)
    assert out.shape == ref.shape  # prompts never change the caller's T
    if unchanged:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    else:
        assert (out - ref).abs().max() > 1e-5
    body.train()
    run(body).square().mean().backward()
    trainable = {n for n, p in body.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in body.named_parameters() if p.grad is not None}
    assert trainable and with_grad == trainable
    path = str(tmp_path / "p.safetensors")
    api.save_pieces(body, path, task="unit")
    tensors, meta = read_piece_file(path)
    assert set(tensors) == trainable == set(piece_state_dict(body))
    assert meta["backbone"]["kind"] == body.kind


@pytest.mark.parametrize("kind,row", CASES)
def test_save_load_onto_fresh_body_reproduces_outputs(kind, row, hf_root, tmp_path):
    body, _, run = build(kind, hf_root)
    api.apply_petl(body, **ROWS[row][0])
    _perturb(body)
    body.eval()
    with torch.no_grad():
        ref = run(body)
    path = str(tmp_path / "p.safetensors")
    api.save_pieces(body, path)
    fresh, _, _ = build(kind, hf_root)
    api.load_pieces_onto(fresh, path)  # the file's own PETL config
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(run(fresh), ref, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_lora_merged_equals_unmerged(kind, hf_root):
    body, _, run = build(kind, hf_root)
    api.apply_petl(body, lora=True, lora_r=4, lora_targets=ALL_LORA, adapter=True, adapter_dim=4)
    _perturb(body)
    body.eval()
    with torch.no_grad():
        ref = run(body)
        unloaded = api.merge_and_unload(copy.deepcopy(body))
        assert not any(isinstance(m, LoRALinear) for m in unloaded.modules())
        torch.testing.assert_close(run(unloaded), ref, rtol=1e-5, atol=1e-5)


def test_input_prompt_respects_padding(hf_root):
    """A padded row's outputs equal the same row run alone without padding (the mask is extended)."""
    body, ids, _ = build("bert", hf_root)
    api.apply_petl(body, input_prompt_length=4)
    _perturb(body)
    body.eval()
    with torch.no_grad():
        batch = body(*body.embed(ids))
        alone = body(*body.embed(ids[1:2, :5]))
    torch.testing.assert_close(batch[1:2, :5], alone, rtol=0, atol=1e-5)
    assert body.input_prompt.prompt.shape == (4, body.width)


def test_piece_file_of_another_body_is_refused(hf_root, tmp_path):
    bert, _, _ = build("bert", hf_root)
    api.apply_petl(bert, lora=True, lora_r=2)
    path = str(tmp_path / "bert.safetensors")
    api.save_pieces(bert, path)
    vit, _, _ = build("vit", hf_root)
    api.apply_petl(vit, lora=True, lora_r=2)
    with pytest.raises(ValueError, match=r"bert.safetensors: pieces of body 'hf-bert' .* cannot load onto body 'hf-vit'"):
        api.load_pieces(vit, path)


def test_ofa_piece_file_without_kind_still_loads(tmp_path):
    """Files written before bodies existed have no `kind`: they are OFA's and load as before."""
    from conftest import small_dictionary
    from ofa_ext.models.ofa.model import OFAModel
    from ofa_ext.models.registered import to_ofa_config

    def model():
        torch.manual_seed(0)
        return OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), small_dictionary())

    m = api.apply_petl(model(), lora=True, lora_r=2)
    path = str(tmp_path / "new.safetensors")
    api.save_pieces(m, path)
    with safe_open(path, framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    backbone = json.loads(meta["backbone"])
    assert backbone.pop("kind") == "ofa"
    old = str(tmp_path / "old.safetensors")
    save_file(tensors, old, metadata={**{k: v for k, v in meta.items() if k != "keep_trainable"},
                                      "backbone": json.dumps(backbone)})
    api.load_pieces(api.apply_petl(model(), lora=True, lora_r=2), old)
    with pytest.raises(ValueError, match=r"pieces of body 'ofa' .* cannot load onto body 'ofa_encoder'"):
        api.load_pieces(api.apply_petl(_ofa_body(), lora=True, lora_r=2), old)


def test_zero_matches_are_errors(hf_root):
    body, _, _ = build("vit", hf_root)
    with pytest.raises(ValueError, match=r"--train-head: selects no parameter"):
        api.apply_petl(body, lora=True, train_head=True)
    body, _, _ = build("bert", hf_root)
    body.sites = SiteTable(name="bert-no-bias", sites=body.sites.sites, bitfit={"pi_tuning": r"nothing", "all": r"x"})
    with pytest.raises(ValueError, match=r"--bitfit-scope=pi_tuning: selects no parameter"):
        api.apply_petl(body, bitfit=True)
    body, _, _ = build("bert", hf_root)
    with pytest.raises(ValueError, match=r"site 'encoder_self_attn' does not exist on hf-bert"):
        api.apply_petl(body, encoder_prompt=True, encoder_prompt_length=2)
    body, _, _ = build("swin", hf_root)
    api.apply_petl(body, input_prompt_length=2)
    with pytest.raises(ValueError, match="input prompts do not fit Swin"):
        body(*body.embed(image_batch(32)))
    with pytest.raises(ValueError, match=r"--input-prompt-length=2: .* contains no body"):
        api.apply_petl(torch.nn.Sequential(torch.nn.Linear(2, 2)), input_prompt_length=2)
    with pytest.raises(ValueError, match=r"--input-prompt-length=-1: expected an integer >= 0"):
        api.apply_petl(build("bert", hf_root)[0], input_prompt_length=-1)


def test_modules_beside_a_body_train_and_travel_with_the_pieces(hf_root, tmp_path):
    """embedder → body → head: `keep_trainable` modules train and are saved/restored with the pieces."""

    class Net(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.embedder = torch.nn.Linear(5, body.width)
            self.body = body
            self.head = torch.nn.Linear(body.width, 2)

        def forward(self, x):
            return self.head(self.body.pool(self.body(self.embedder(x))))

    def net():
        torch.manual_seed(5)
        return Net(build("bert", hf_root)[0])

    x = torch.randn(2, 4, 5)
    m = api.apply_petl(net(), keep_trainable=("embedder", "head"), lora=True, lora_r=2, input_prompt_length=2)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert {"embedder.weight", "head.bias", "body.input_prompt.prompt"} <= trainable
    assert not any(n.startswith("body.model.") and "lora_" not in n for n in trainable)
    _perturb(m)
    m.eval()
    path = str(tmp_path / "net.safetensors")
    api.save_pieces(m, path)
    fresh = api.load_pieces_onto(net(), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="keep_trainable: no parameter under 'neck'"):
        api.apply_petl(net(), keep_trainable=("neck",), lora=True)


def test_api_specs(hf_root):
    assert api.parse_body_spec("hf:/a/b#vision") == ("hf", "/a/b", "vision")
    with pytest.raises(ValueError, match=r"body spec 'bert': expected 'minilm', 'hf:DIR'"):
        api.load_body("bert")
    with pytest.raises(ValueError, match=r"'ofa:nope': expected a checkpoint file \(.pt\) or an arch"):
        api.load_body("ofa:nope")
    with pytest.raises(TypeError, match="unknown PETL options"):
        api.apply_petl(build("bert", hf_root)[0], loraa=True)
    assert api.load_body(f"hf:{save_tiny('clip', hf_root)}#text").kind == "hf-clip-text"
    assert api.trainable_summary(api.load_body("ofa:ofa_nano"))["percent"] == 100.0
    text_only = api.load_body("ofa:ofa_nano#text")
    assert not text_only.images and api.trainable_summary(text_only)["percent"] < 100.0  # image path frozen
    with pytest.raises(ValueError, match="an OFA body takes only '#text'"):
        api.load_body("ofa:ofa_nano#vision")


def test_backbone_freeze_options_apply_with_and_without_petl():
    """--freeze-resnet / --freeze-*-embedding live with PETL's freezing and hold in both cases."""
    import dataclasses

    from conftest import small_dictionary
    from ofa_ext.models.ofa.model import OFAModel
    from ofa_ext.models.petl import apply_petl
    from ofa_ext.models.registered import to_ofa_config

    cfg = to_ofa_config({"arch": "ofa_nano", "freeze_resnet": True, "freeze_encoder_embedding": True},
                        script_flags=True)
    full = apply_petl(OFAModel.build_from_config(cfg, small_dictionary()), cfg)  # no PETL method: full tuning
    frozen = {n for n, p in full.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in full.named_parameters()
                      if n.startswith("encoder.embed_images.") or n == "encoder.embed_tokens.weight"}
    lora = dataclasses.replace(cfg, lora=True, lora_r=2, train_head=True)
    model = apply_petl(OFAModel.build_from_config(lora, small_dictionary()), lora)
    assert not model.encoder.embed_tokens.weight.requires_grad  # the backbone option wins over --train-head
    assert model.encoder.layers[0].self_attn.q_proj.lora_A.requires_grad


@pytest.mark.parametrize("kind", ["bert", "clip-vision", "ofa_encoder"])
@pytest.mark.parametrize("opts", [{}, dict(bitfit=True, bitfit_scope="all", train_layernorm=True, lora=True)])
def test_outside_embedder_leaves_no_trainable_parameter_unused(kind, opts, hf_root):
    """After use_external_inputs() the native embedding is frozen and never opted in: with full
    tuning and with every opt-in, exactly the trainable parameters get gradients (DDP-safe)."""
    body, _, _ = build(kind, hf_root)
    body.use_external_inputs()
    if opts:
        api.apply_petl(body, **opts)
    body.train()
    hidden = body(torch.randn(2, 5, body.width))
    (hidden.square().mean() + body.project(body.pool(hidden)).square().mean()).backward()  # CLIP: pool/project
    trainable = {n for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in body.named_parameters() if p.grad is not None}
    assert not any(".embeddings." in n or "embed_tokens" in n for n in trainable)
