"""Text in front of a text body: its own tokenizer, then its own token embedding.

Cross-modal methods put a trainable embedder in front of a body for a *foreign* input; text is
the body's *native* input, so this embedder has no weights of its own: strings are tokenised with
the tokenizer saved in the body's folder (padded/truncated to ``max_tokens``) and embedded by
``body.embed`` (for the BERT family: word + position + type embeddings and LayerNorm). The prompt
tasks use it to tune source prompts on text with MiniLM.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..bodies.base import Body


def tokenizer_dir(spec: str) -> str:
    """The folder holding the tokenizer of body ``spec`` (``minilm`` or ``hf:DIR``)."""
    from ...api import parse_body_spec
    from ..bodies.hf import minilm_dir

    scheme, where, _ = parse_body_spec(spec)
    if scheme == "minilm":
        return minilm_dir()
    if scheme == "hf":
        return where
    raise ValueError(f"--body {spec!r}: text input needs a Hugging Face text body with a tokenizer "
                     "('minilm' or 'hf:DIR')")


def load_tokenizer(spec: str):
    """The body folder's own tokenizer, never a download."""
    from transformers import AutoTokenizer

    path = tokenizer_dir(spec)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: no usable tokenizer in the body folder ({str(e).splitlines()[0]})") from None


class TextEmbedder(nn.Module):
    """``texts [B] -> (embeds (B, T, d), padding_mask (B, T))`` through the body's own embedding."""

    def __init__(self, body: Body, tokenizer, max_tokens: int):
        super().__init__()
        if body.modality != "text":
            raise ValueError(f"text input needs a text body, {body.kind} takes {body.modality}")
        if not 2 <= max_tokens <= body.max_length:
            raise ValueError(f"--target-seq-len {max_tokens}: text bodies take 2..{body.max_length} tokens")
        self.tokenizer, self.n_tokens = tokenizer, max_tokens
        self._embed = body.embed  # a bound method: the body's weights stay registered in the body only

    def tokenize(self, texts: List[str], device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.n_tokens,
                             return_tensors="pt")
        return enc["input_ids"].to(device), (enc["attention_mask"] == 0).to(device)

    def forward(self, texts: List[str]) -> Tuple[Tensor, Tensor]:
        device = next(iter(self._embed.__self__.parameters())).device
        ids, pad = self.tokenize(texts, device)
        out = self._embed(ids, pad)
        return out.embeds, (pad if out.padding_mask is None else out.padding_mask)
