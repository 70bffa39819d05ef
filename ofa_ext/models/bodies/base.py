"""The body interface: one small contract over every pretrained encoder the methods reuse.

A body turns tokens of width ``d`` into hidden states. ORCA, PaRe and prompt transfer put an
embedder (target input → ``(B, T, d)``) in front of it and a head behind it; cross-modal
adaptation reads its pooled, projected features. Every body offers

* ``embed(inputs) -> BodyInput``: its own embedding of its native modality (token ids ``(B, T)``
  long for text bodies, images ``(B, C, H, W)`` for vision bodies), positions included where the
  model adds them to the embeddings;
* ``forward(embeds (B, T, d), padding_mask (B, T) bool, True = pad) -> hidden (B, T', d_out)``
  (``T' = T`` and ``d_out = d`` for every body but Swin, whose stages merge patches);
* ``width`` (d), ``out_width``, ``max_length`` (longest ``T`` its positions cover; prompts extra),
  ``modality`` (``"text"`` / ``"image"``), ``kind`` (recorded in piece files) and ``signature()``
  (the shapes a piece file depends on);
* ``sites``: its :class:`SiteTable`, where PETL pieces may attach (names relative to the body);
* ``pool(hidden, padding_mask)`` (the model's own sentence/image summary: CLS, EOS or mean) and
  ``project(pooled)`` (CLIP's projection to the joint space; identity elsewhere).

An embedder in front of a body calls :meth:`Body.use_external_inputs` once: the native embedding
is then off the forward path, so it is frozen and never opted in by PETL (no trainable parameter
goes unused, which DDP refuses).

PETL hook (the body knows nothing of PETL): ``input_prompt`` is ``None`` or a module called as
``input_prompt(embeds, padding_mask) -> (embeds', padding_mask')`` that prepends ``P =
input_prompt.length`` tokens. :meth:`Body.forward` calls it, runs :meth:`Body.encode` on the longer
sequence and drops the ``P`` prompt positions again, so callers always get their own ``T`` back.
Prompt tokens carry no position: HF bodies add positions inside ``embed``, before the prompt is
prepended, and the OFA body gives prompt rows/columns zero position bias.
"""

import re
from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class SiteTable:
    """Where PETL attaches to one body family: module-name patterns relative to the body.

    ``sites``: site -> regular expression over module names (full match). Generic site names
    shared by every body: ``q_proj k_proj v_proj out_proj fc1 fc2`` (LoRA targets), ``post_attn``
    and ``post_ffn`` (adapters; an ``nn.Identity`` slot or the ``nn.Linear`` the adapter follows),
    ``encoder_self_attn`` / ``decoder_self_attn`` (prefixes; attention modules with a
    ``prefix_provider`` hook). A body lists only the sites it has.
    ``bitfit``: BitFit scope -> regular expression over parameter names (full match).
    ``never_train``: parameters outside the forward pass, skipped by every opt-in.
    ``head``: parameters ``--train-head`` opts in (empty: the body has no head).
    ``embedding``: parameters used only by ``embed`` (the native input embedding), off the path
    once an outside embedder feeds the body (:meth:`Body.use_external_inputs`).
    ``layer_norm_types``: the modules ``--train-layernorm`` opts in.
    """

    name: str
    sites: Dict[str, str]
    bitfit: Dict[str, str]
    never_train: str = r"(?!)"  # matches nothing
    head: str = r"(?!)"
    embedding: str = r"(?!)"
    layer_norm_types: tuple = (nn.LayerNorm,)


class BodyInput(NamedTuple):
    """What ``Body.embed`` returns and ``Body.forward`` takes: ``body(*body.embed(x))`` runs it."""

    embeds: Tensor  # (B, T, d)
    padding_mask: Optional[Tensor] = None  # (B, T) bool, True = pad; None = no padding
    layout: Any = None  # body-specific token layout (OFA: image grid; Swin: (h, w)); None = a sequence


class Body(nn.Module):
    """Base class; subclasses set the attributes in ``__init__`` and implement ``embed``/``encode``."""

    kind: str = "body"
    modality: str = "text"
    sites: SiteTable
    width: int
    out_width: int
    max_length: int

    def __init__(self) -> None:
        super().__init__()
        self.input_prompt: Optional[nn.Module] = None  # PETL hook, see the module docstring
        self.external_inputs = False  # True: an outside embedder feeds forward(), embed() is unused

    # -- to implement ----------------------------------------------------------------------
    def embed(self, inputs: Tensor, padding_mask: Optional[Tensor] = None) -> BodyInput:
        """The body's native embedding of ``inputs`` (token ids or images)."""
        raise NotImplementedError

    def encode(self, embeds: Tensor, padding_mask: Optional[Tensor], layout: Any, prompt_length: int) -> Tensor:
        """Hidden states of every position of ``embeds`` (the first ``prompt_length`` are prompts)."""
        raise NotImplementedError

    def signature(self) -> Dict[str, Any]:
        """Dimensions a piece file depends on (layers, width, heads, ffn, ...)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def forward(self, embeds: Tensor, padding_mask: Optional[Tensor] = None, layout: Any = None) -> Tensor:
        """(B, T, d) embeddings → (B, T', d_out) hidden states of the caller's own positions."""
        if embeds.dim() != 3 or embeds.shape[-1] != self.width:
            raise ValueError(f"{self.kind}: embeddings of shape (B, T, {self.width}) expected, got {tuple(embeds.shape)}")
        if padding_mask is not None and (padding_mask.shape != embeds.shape[:2] or padding_mask.dtype != torch.bool):
            raise ValueError(f"{self.kind}: padding_mask must be bool of shape {tuple(embeds.shape[:2])} with True = pad "
                             f"(the opposite of an HF attention mask), got {padding_mask.dtype} {tuple(padding_mask.shape)}")
        if embeds.shape[1] > self.max_length:
            raise ValueError(f"{self.kind}: {embeds.shape[1]} tokens exceed the body's maximum length {self.max_length}")
        prompt_length = 0
        if self.input_prompt is not None:  # prompts take no position, so they do not count
            embeds, padding_mask = self.input_prompt(embeds, padding_mask)
            prompt_length = int(self.input_prompt.length)
        hidden = self.encode(embeds, padding_mask, layout, prompt_length)
        return hidden[:, prompt_length:] if prompt_length else hidden

    def use_external_inputs(self) -> "Body":
        """Declare that an outside embedder feeds :meth:`forward`: freeze the native embedding
        (``sites.embedding``), which PETL then never opts in either."""
        self.external_inputs = True
        pattern = re.compile(self.sites.embedding)
        for name, p in self.named_parameters():
            if pattern.fullmatch(name):
                p.requires_grad_(False)
        return self

    def pool(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """(B, T, d) → (B, d): the first token (BERT/ViT CLS); bodies override with their own rule."""
        return hidden[:, 0]

    def project(self, pooled: Tensor) -> Tensor:
        """Pooled features → the body's output space (CLIP: the joint image–text space)."""
        return pooled

    def describe(self) -> str:
        sig = ", ".join(f"{k}={v}" for k, v in self.signature().items())
        return f"{self.kind} ({sig})"


def mean_pool(hidden: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """Mean over non-pad positions: (B, T, d), (B, T) bool True = pad → (B, d)."""
    if padding_mask is None:
        return hidden.mean(1)
    keep = (~padding_mask).unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)


def last_token_pool(hidden: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """The last non-pad position of each row (CLIP text: the end-of-text token)."""
    if padding_mask is None:
        return hidden[:, -1]
    last = (~padding_mask).long().sum(1).clamp_min(1) - 1  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def find_bodies(model: nn.Module) -> Dict[str, Body]:
    """Every body inside ``model`` by module name ("" when ``model`` is one), outermost only."""
    found: Dict[str, Body] = {}
    for name, m in model.named_modules():
        if isinstance(m, Body) and not any(name.startswith(f"{p}.") or p == "" for p in found):
            found[name] = m
    return found
