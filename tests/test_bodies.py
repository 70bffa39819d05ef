"""Bodies: each wrapper equals the bare model it wraps; MiniLM is really pretrained; bad folders fail clearly."""

import json
import os

import pytest
import torch

from bodies_helpers import EOS, image_batch, save_tiny, text_batch
from ofa_ext.models.bodies import Body, find_bodies, mean_pool
from ofa_ext.models.bodies.hf import load_hf_body, minilm_dir
from ofa_ext.models.bodies.ofa import OFABody


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf"))


def _bare(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, local_files_only=True).eval()


@pytest.mark.parametrize("kind,pad_id", [("bert", 0), ("roberta", 1)])
def test_text_encoder_equals_bare_automodel(hf_root, kind, pad_id):
    path = save_tiny(kind, hf_root)
    body, bare = load_hf_body(path), _bare(path)
    ids, attention = text_batch(pad_id)
    with torch.no_grad():
        ours = body(*body.embed(ids))  # padding mask from ids == pad_token_id
        ref = bare(input_ids=ids, attention_mask=attention).last_hidden_state
    keep = attention.bool()
    torch.testing.assert_close(ours[keep], ref[keep], rtol=0, atol=1e-6)
    assert body.width == body.out_width == 32 and body.kind == f"hf-{kind}" and body.modality == "text"


@pytest.mark.parametrize("kind,size", [("vit", 16), ("swin", 32)])
def test_vision_encoder_equals_bare_automodel(hf_root, kind, size):
    path = save_tiny(kind, hf_root)
    body, bare = load_hf_body(path), _bare(path)
    images = image_batch(size)
    with torch.no_grad():
        ours = body(*body.embed(images))
        ref = bare(pixel_values=images).last_hidden_state
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert ours.shape[-1] == body.out_width and body.modality == "image"


def test_clip_towers_equal_clip_model_with_projections(hf_root):
    from transformers import CLIPModel

    path = save_tiny("clip", hf_root)
    clip = CLIPModel.from_pretrained(path, local_files_only=True).eval()
    text, vision = load_hf_body(path, tower="text"), load_hf_body(path, tower="vision")
    ids, attention = text_batch()
    images = image_batch(16)
    pad = attention.eq(0)
    with torch.no_grad():
        h = text(*text.embed(ids, pad))
        ref = clip.text_model(input_ids=ids, attention_mask=attention).last_hidden_state
        torch.testing.assert_close(h[~pad], ref[~pad], rtol=0, atol=1e-6)
        feats = clip.get_text_features(input_ids=ids, attention_mask=attention).pooler_output
        torch.testing.assert_close(text.project(text.pool(h, pad)), feats, rtol=0, atol=1e-6)
        v = vision(*vision.embed(images))
        torch.testing.assert_close(v, clip.vision_model(pixel_values=images).last_hidden_state, rtol=0, atol=1e-6)
        feats = clip.get_image_features(pixel_values=images).pooler_output
        torch.testing.assert_close(vision.project(vision.pool(v)), feats, rtol=0, atol=1e-6)
    assert (text.kind, vision.kind) == ("hf-clip-text", "hf-clip-vision")
    assert ids[1, 4] == EOS  # the padded row's pooled token is its end-of-text


def test_forward_from_outside_embeddings_and_shape_checks(hf_root):
    body = load_hf_body(save_tiny("bert", hf_root))
    x = torch.randn(2, 5, body.width)
    assert body(x).shape == (2, 5, body.width)
    with pytest.raises(ValueError, match=r"\(B, T, 32\)"):
        body(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="exceed the body's maximum length 64"):
        body(torch.randn(1, 65, body.width))
    with pytest.raises(ValueError, match=r"padding_mask must be bool .* True = pad"):
        body(x, torch.ones(2, 5, dtype=torch.long))  # an HF attention mask passed by mistake


def _ofa_nano():
    from conftest import small_dictionary
    from ofa_ext.models.ofa.model import OFAModel
    from ofa_ext.models.registered import to_ofa_config

    d = small_dictionary()
    torch.manual_seed(0)
    model = OFAModel.build_from_config(to_ofa_config({"arch": "ofa_nano"}, script_flags=True), d).eval()
    g = torch.Generator().manual_seed(2)
    src = torch.randint(4, len(d), (3, 6), generator=g)
    src[:, 0], src[:, -1] = d.bos(), d.eos()
    src[0, -2:] = d.pad()
    return model, src, torch.randn(3, 3, 32, 32, generator=g)


def test_ofa_body_is_the_encoder_of_our_ofa_model():
    model, src, images = _ofa_nano()
    body = OFABody(model.encoder)
    assert body.encoder is model.encoder and isinstance(body, Body)
    with torch.no_grad():
        for tokens, imgs in ((src, None), (src, images)):
            ref = model.encoder(tokens, patch_images=imgs)
            inp = body.embed_pair(tokens, imgs)
            torch.testing.assert_close(inp.padding_mask, ref["encoder_padding_mask"][0])
            torch.testing.assert_close(body(*inp), ref["encoder_out"][0].transpose(0, 1), rtol=0, atol=0)
        text_only = body(*body.embed(src))
        torch.testing.assert_close(text_only, model.encoder(src)["encoder_out"][0].transpose(0, 1), rtol=0, atol=0)
        image_only = body(*body.embed(images))  # patches with OFA's image biases, no text
        assert image_only.shape[:2] == body.embed(images).embeds.shape[:2]
    assert body.signature()["encoder_embed_dim"] == body.width == model.encoder.embed_tokens.embedding_dim


def test_input_prompt_hook_prepends_and_strips(hf_root):
    """HF bodies: a prompted body = the bare body on [prompt; embeds] with the mask extended, minus P rows."""
    body = load_hf_body(save_tiny("bert", hf_root))
    ids, attention = text_batch()
    inp = body.embed(ids)

    class Prompt(torch.nn.Module):
        length = 3

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.randn(3, body.width))

        def forward(self, x, mask):
            return (torch.cat([self.p.expand(x.shape[0], -1, -1), x], 1),
                    torch.cat([torch.zeros(x.shape[0], 3, dtype=torch.bool), mask], 1))

    with torch.no_grad():
        body.input_prompt = Prompt()
        prompted = body(*inp)
        x, mask = body.input_prompt(inp.embeds, inp.padding_mask)
        body.input_prompt = None
        manual = body(x, mask)[:, 3:]
    assert prompted.shape == inp.embeds.shape
    keep = attention.bool()
    torch.testing.assert_close(prompted[keep], manual[keep], rtol=0, atol=0)


def test_minilm_is_really_pretrained():
    from transformers import AutoTokenizer

    path = minilm_dir()
    body = load_hf_body(path)
    assert body.kind == "hf-bert" and body.width == 384 and body.pooling == "mean"
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.",
                 "The stock market fell sharply today.", "A dog runs in the park."]
    batch = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        inp = body.embed(batch["input_ids"])
        e = torch.nn.functional.normalize(body.pool(body(*inp), inp.padding_mask), dim=-1)
        ref = _bare(path)(**batch).last_hidden_state
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(body(*inp)[keep], ref[keep], rtol=0, atol=1e-5)
    sim = e @ e.T
    paraphrase = sim[0, 1].item()
    unrelated = [sim[i, j].item() for i, j in ((0, 2), (0, 3), (1, 2), (1, 3), (2, 3))]
    assert paraphrase > 0.5 and max(unrelated) < 0.3, (paraphrase, unrelated)  # random init: all > 0.9


def test_find_bodies_sees_a_nested_body(hf_root):
    body = load_hf_body(save_tiny("vit", hf_root))
    outer = torch.nn.Module()
    outer.body = body
    assert find_bodies(outer) == {"body": body} and find_bodies(body) == {"": body}
    assert mean_pool(torch.ones(1, 2, 3), torch.tensor([[False, True]])).shape == (1, 3)


# -- bad input -----------------------------------------------------------------------------------
def test_missing_folder_config_and_weights(tmp_path, hf_root):
    with pytest.raises(FileNotFoundError, match=r"hf:.*nope: no such folder"):
        load_hf_body(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no config.json"):
        load_hf_body(str(tmp_path / "empty"))
    src = save_tiny("bert", hf_root)
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text(open(os.path.join(src, "config.json")).read())
    with pytest.raises(FileNotFoundError, match=r"only_config: no weights in the folder"):
        load_hf_body(str(only_config))
    assert load_hf_body(str(only_config), random_init=True).kind == "hf-bert"  # random init needs no weights


def test_unsupported_model_type_and_towers(tmp_path, hf_root):
    from transformers import GPT2Config, GPT2Model

    gpt = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16)).save_pretrained(str(gpt))
    with pytest.raises(ValueError, match=r"gpt2: model type 'gpt2' is not supported as a body \(supported: bert"):
        load_hf_body(str(gpt))
    with pytest.raises(ValueError, match=r"choose one with hf:.*#text or hf:.*#vision"):
        load_hf_body(save_tiny("clip", hf_root))
    with pytest.raises(ValueError, match="towers exist only for CLIP"):
        load_hf_body(save_tiny("bert", hf_root), tower="text")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no_such_model"}))
    (bad / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="badjson"):
        load_hf_body(str(bad))


def test_swin_refuses_padding_and_prompts(hf_root):
    body = load_hf_body(save_tiny("swin", hf_root))
    inp = body.embed(image_batch(32))
    with pytest.raises(ValueError, match="Swin takes no padding"):
        body(inp.embeds, torch.ones(inp.embeds.shape[:2], dtype=torch.bool), inp.layout)
    with pytest.raises(ValueError, match="not a square grid"):
        body(inp.embeds[:, :15])
