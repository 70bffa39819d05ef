"""Frozen feature extractors for cross-modal adaptation: one body spec → image and text features.

The two streams of one body are pooled and projected the same way, so text rows and image rows
live in one space:

* ``hf:DIR`` of a CLIP model: the vision tower (CLS → ``post_layernorm`` → ``visual_projection``)
  and the text tower (end-of-text token → ``text_projection``), i.e. CLIP's projected embeddings;
  the tokenizer is the folder's own (``AutoTokenizer``, local files only).
* ``minilm`` / ``hf:DIR`` of a BERT-family model: text only (the body's pooling), for the
  text-only mechanics check where documents are the samples.
* ``ofa:PATH.pt`` / ``ofa:ARCH``: the OFA encoder on image-only and text-only inputs
  (``ofa_feature_encoder.py``; :func:`feature_encoder` picks it).

Layer index 0: the final features ``(B, D)``. Layer index ``k >= 1`` (partial fine-tuning): the
*samples* (images; documents for a text body) are the hidden states at the input of the last ``k``
blocks, ``(B, T, d)`` in ``cache_dtype`` (float16 by default: a sequence per sample), with the
padding mask of text samples; the class-name texts stay final text features, as the released code
(``text_layer_idx = 0`` in every script), so only the sample stream goes through the trained blocks
(``partial_blocks.PartialTower``). Features are returned un-normalised (the head normalises, as the
released code).
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ...api import load_body, parse_body_spec
from ...data.xmodal_sources import CLIP_MEAN_STD
from .partial_blocks import LayerStack, hidden_before_last


class FeatureEncoder:
    """``encode_images([B, 3, s, s]) -> [B, D]``, ``encode_texts(list) -> [B, D]``; eval mode, no grad."""

    mean_std = CLIP_MEAN_STD  # of the CoOp crops fed to encode_images

    def __init__(self, spec: str, layer: int = 0, cache_dtype: torch.dtype = torch.float16) -> None:
        from transformers import AutoConfig, AutoTokenizer

        from ..bodies.hf import minilm_dir

        if layer < 0:
            raise ValueError(f"--layer {layer}: expected 0 (final features) or k >= 1 (input of the last k blocks)")
        scheme, where, tower = parse_body_spec(spec)
        if scheme == "ofa":
            raise ValueError(f"--body {spec}: OFA bodies are encoded by OFAFeatureEncoder (use feature_encoder)")
        if tower is not None:
            raise ValueError(f"--body {spec}: give the CLIP folder without '#{tower}'; both towers are used")
        folder = minilm_dir() if scheme == "minilm" else where
        self.spec, self.layer, self.folder = spec, layer, folder
        model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
        self.vision = None
        if model_type == "clip":
            self.vision = load_body(f"hf:{folder}#vision").eval()
            self.text = load_body(f"hf:{folder}#text").eval()
        else:
            self.text = load_body(spec).eval()
            if self.text.modality != "text":
                raise ValueError(f"--body {spec}: a CLIP folder or a text body is expected, got {self.text.kind}")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.image_size: Optional[int] = None if self.vision is None else int(self.vision.config.image_size)
        self.cache_dtype = cache_dtype
        if layer:
            for body in (self.vision, self.text):
                if body is not None:
                    LayerStack(body).check_k(layer, where=f" ({folder}/config.json)")

    def sample_body(self, kind: str):
        """The tower that encodes samples of ``kind`` (image / text) and its body spec."""
        if kind == "image":
            return self.vision, f"hf:{self.folder}#vision"
        return self.text, (f"hf:{self.folder}#text" if self.vision is not None else self.spec)

    @property
    def kinds(self) -> tuple:
        return ("image", "text") if self.vision is not None else ("text",)

    def identity(self) -> Dict[str, Any]:
        """What a cache must match: the spec, the layer and the bodies' shapes."""
        bodies = {"text": self.text.signature()}
        if self.vision is not None:
            bodies["vision"] = self.vision.signature()
        identity = {"body": self.spec, "layer": self.layer, "signature": bodies}
        if self.layer:
            identity["cache_dtype"] = str(self.cache_dtype).replace("torch.", "")
        return identity

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        if self.vision is None:
            raise ValueError(f"--body {self.spec}: a text body cannot encode images")
        if self.layer:
            return hidden_before_last(self.vision, images, self.layer)[0].to(self.cache_dtype)
        inp = self.vision.embed(images)
        pooled = self.vision.pool(self.vision(*inp), inp.padding_mask)
        return self.vision.project(pooled).float()

    def _tokens(self, texts: List[str]):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.text.max_length,
                               return_tensors="pt")
        return batch["input_ids"], ~batch["attention_mask"].bool()

    @torch.no_grad()
    def encode_texts(self, texts: List[str]) -> Tensor:
        """Final text features (B, D): the class-name table at every layer index."""
        ids, padding_mask = self._tokens(texts)
        inp = self.text.embed(ids, padding_mask)
        pooled = self.text.pool(self.text(*inp), inp.padding_mask)
        return self.text.project(pooled).float()

    @torch.no_grad()
    def encode_text_samples(self, texts: List[str]) -> Tuple[Tensor, Optional[Tensor]]:
        """Text samples: final features (B, D) at layer 0, else (B, T, d) hidden states and the (B, T) padding."""
        if not self.layer:
            return self.encode_texts(texts), None
        ids, padding_mask = self._tokens(texts)
        hidden, padding_mask = hidden_before_last(self.text, ids, self.layer, padding_mask)
        return hidden.to(self.cache_dtype), padding_mask

def feature_encoder(spec: str, layer: int = 0, bpe_dir: Optional[str] = None, spm_model: Optional[str] = None,
                    cache_dtype: torch.dtype = torch.float16):
    """The extractor of ``spec``: :class:`OFAFeatureEncoder` for ``ofa:`` specs, else :class:`FeatureEncoder`;
    ``bpe_dir``/``spm_model`` (an OFA body's text vocabulary) are refused for the others."""
    if parse_body_spec(spec)[0] == "ofa":
        from .ofa_feature_encoder import OFAFeatureEncoder

        return OFAFeatureEncoder(spec, layer, bpe_dir=bpe_dir, spm_model=spm_model)
    if bpe_dir or spm_model:
        raise ValueError(f"--{'bpe-dir' if bpe_dir else 'spm-model'}: only for an 'ofa:' body (the text "
                         f"vocabulary of an OFA checkpoint); --body {spec} brings its own tokenizer")
    return FeatureEncoder(spec, layer, cache_dtype)
