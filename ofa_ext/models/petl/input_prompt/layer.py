"""Input-level prompt tuning (Lester et al. 2021; the input prompts of prompt transfer).

``P`` learned vectors of the body's width are prepended to the token embeddings of every sample
and the padding mask is extended with ``False`` (prompts are never padding). The body calls this
module through its ``input_prompt`` hook (``models/bodies/base.py``), runs the longer sequence and
drops the ``P`` prompt positions from its output, so callers see their own ``T`` positions. Unlike
prefixes (keys/values inside every attention layer, ``--encoder-prompt``) the prompts enter once,
at the input, and so work on every body.
"""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

INPUT_PROMPT_INITS = ("normal", "xavier")
#: VPT's fan-in for its Xavier rule: a 3-channel 16×16 patch (ViT-B/16); image bodies pass their own
VPT_FAN_IN = 3 * 16 * 16


def xavier_bound(fan_in: int, width: int) -> float:
    """VPT's uniform init bound ``√(6 / (fan_in + width))``."""
    return math.sqrt(6.0 / (fan_in + width))


def prepend_prompt(prompt: Tensor, embeds: Tensor, padding_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """``prompt`` [P, d] before every sample of ``embeds`` [B, T, d]; prompts are never padding."""
    bsz, seq_len = embeds.shape[:2]
    rows = prompt.to(embeds.dtype).unsqueeze(0).expand(bsz, -1, -1)  # [B, P, d]
    if padding_mask is None:
        padding_mask = torch.zeros(bsz, seq_len, dtype=torch.bool, device=embeds.device)
    keep = torch.zeros(bsz, prompt.shape[0], dtype=torch.bool, device=embeds.device)
    return torch.cat([rows, embeds], 1), torch.cat([keep, padding_mask], 1)


class InputPrompt(nn.Module):
    """``prompt`` [P, d]: ``(embeds [B, T, d], mask [B, T] | None) -> ([B, P+T, d], [B, P+T])``.

    Init ``normal``: N(0, std²). ``xavier``: VPT's uniform(−v, v), ``v = √(6 / (fan_in + d))`` with
    the fan-in of the body's patch projection (``3·p²``; VPT's 3·16·16 for bodies without patches).
    """

    def __init__(self, length: int, width: int, std: float = 0.02, init: str = "normal", fan_in: int = VPT_FAN_IN,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        if length <= 0:
            raise ValueError(f"input_prompt_length must be > 0, got {length}")
        if init not in INPUT_PROMPT_INITS:
            raise ValueError(f"--input-prompt-init {init!r}: expected one of {', '.join(INPUT_PROMPT_INITS)}")
        self.length, self.std, self.init, self.fan_in = length, std, init, fan_in
        self.prompt = nn.Parameter(torch.empty(length, width, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == "xavier":
            bound = xavier_bound(self.fan_in, self.prompt.shape[1])
            nn.init.uniform_(self.prompt, -bound, bound)
        else:
            nn.init.normal_(self.prompt, std=self.std)

    def forward(self, embeds: Tensor, padding_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        return prepend_prompt(self.prompt, embeds, padding_mask)

    def extra_repr(self) -> str:
        return f"length={self.length}, width={self.prompt.shape[1]}"
