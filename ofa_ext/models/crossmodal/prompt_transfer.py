"""Building a target prompt from a source prompt (``specs/prompt_transfer.md`` §3).

A source prompt ``S`` ``(L_s, d_s)`` — tuned on another task, possibly in another modality or
another model — becomes the input prompt ``(L, d)`` of the target body in one of three ways:

* ``frozen``: ``S`` itself (needs ``d_s == d``), nothing about the prompt trains;
* ``projection``: ``S·Wᵀ + b`` with a trained ``Linear(d_s, d)``;
* ``attention``: ``[A(S); T]`` — ``K`` tokens attended from ``S`` by learned queries, then
  ``L − K`` fresh target tokens ``T``. The released projector does **not** scale the scores by
  ``1/√d``; ``scaled=True`` is the textbook variant.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ...metrics.transferability import ffn_activation_pattern
from ..bodies.base import Body
from ..petl.input_prompt import VPT_FAN_IN, prepend_prompt, xavier_bound
from ..petl.sites import match_site

MODES = ("frozen", "projection", "attention")


def xavier_prompt(length: int, width: int, fan_in: int = VPT_FAN_IN,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """A ``(length, width)`` prompt drawn from VPT's Xavier-uniform rule (as ``--input-prompt-init xavier``)."""
    v = xavier_bound(fan_in, width)
    return (torch.rand(length, width, generator=generator) * 2 - 1) * v


class AttentionProjector(nn.Module):
    """``K`` learned queries attend over the source prompt: ``softmax(Q·(W_k S)ᵀ)·(W_v S)``."""

    def __init__(self, num_tokens: int, source_width: int, width: int, dropout: float = 0.0,
                 scaled: bool = False):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_tokens, width))
        self.key = nn.Linear(source_width, width)
        self.value = nn.Linear(source_width, width)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(width) if scaled else 1.0

    def forward(self, source: Tensor) -> Tensor:
        scores = (self.queries @ self.key(source).T) * self.scale  # (K, L_s)
        return self.dropout(scores.softmax(-1)) @ self.value(source)  # (K, d)


class TransferredPrompt(nn.Module):
    """The target body's input prompt, built from a frozen source prompt per ``mode``."""

    def __init__(self, source: Tensor, width: int, mode: str = "projection", total_len: Optional[int] = None,
                 attn_src_len: Optional[int] = None, attn_dropout: float = 0.0, scaled: bool = False,
                 target_init: Optional[Tensor] = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"--pt-mode {mode!r}: expected one of {', '.join(MODES)}")
        if source.dim() != 2:
            raise ValueError(f"--pt-source-prompt: expected a (tokens, width) prompt, got {tuple(source.shape)}")
        src_len, src_width = source.shape
        if mode == "frozen" and src_width != width:
            raise ValueError(f"--pt-source-prompt has width {src_width} but the body has {width}: "
                             "a frozen transfer needs equal widths (use --pt-mode projection)")
        self.mode = mode
        self.register_buffer("source", source.detach().float().clone(), persistent=True)
        self.total_len = total_len or src_len
        if mode != "attention" and self.total_len != src_len:
            raise ValueError(f"--pt-total-len {total_len}: only --pt-mode attention builds a prompt of another "
                             f"length than the source's {src_len} tokens")
        if mode == "projection":
            self.projector = nn.Linear(src_width, width)
        if mode == "attention":
            k = attn_src_len if attn_src_len is not None else self.total_len
            if not 1 <= k <= self.total_len:
                raise ValueError(f"--pt-attn-src-len {k}: expected 1..--pt-total-len ({self.total_len})")
            self.attention = AttentionProjector(k, src_width, width, attn_dropout, scaled)
            fresh = self.total_len - k
            init = target_init if target_init is not None else xavier_prompt(fresh, width)
            if tuple(init.shape) != (fresh, width):
                raise ValueError(f"target prompt init: expected shape {(fresh, width)}, got {tuple(init.shape)}")
            self.target = nn.Parameter(init.clone().float())

    def forward(self) -> Tensor:
        """The ``(L, d)`` prompt the body receives."""
        if self.mode == "frozen":
            return self.source
        if self.mode == "projection":
            return self.projector(self.source)
        return torch.cat([self.attention(self.source), self.target], dim=0)


class TransferredPromptHook(nn.Module):
    """The body's ``input_prompt`` hook (see ``models/bodies/base.py``) fed by a :class:`TransferredPrompt`."""

    def __init__(self, prompt: TransferredPrompt):
        super().__init__()
        self.prompt = prompt
        self.length = prompt.total_len

    def forward(self, embeds: Tensor, padding_mask: Optional[Tensor]):
        return prepend_prompt(self.prompt(), embeds, padding_mask)


def stimulation_pattern(body: Body, prompt: Tensor, anchor: Tensor, layers: int = 3) -> Tensor:
    """Model stimulation (ON, Su et al.): ``[prompt; anchor]`` through the frozen body, no input.

    ``anchor`` ``(1, d)`` is the body's own embedding of its summary token (a text body's CLS,
    a ViT's CLS with its position); the binary FFN pattern is read at that position in the last
    ``layers`` layers (the FFN's first projection, found through the body's ``fc1`` site).
    """
    ffn = [m for _, m in match_site(body, "fc1")][-layers:]
    if len(ffn) < layers:
        raise ValueError(f"model stimulation: {body.kind} has {len(ffn)} FFN layers, {layers} requested")
    embeds = torch.cat([prompt.float(), anchor.float()]).unsqueeze(0)  # (1, P + 1, d)
    return ffn_activation_pattern(lambda: body.encode(embeds, None, None, 0), ffn, position=prompt.shape[0])
