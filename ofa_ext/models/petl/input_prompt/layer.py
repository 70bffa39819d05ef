"""Input-level prompt tuning (Lester et al. 2021; the input prompts of prompt transfer).

``P`` learned vectors of the body's width are prepended to the token embeddings of every sample
and the padding mask is extended with ``False`` (prompts are never padding). The body calls this
module through its ``input_prompt`` hook (``models/bodies/base.py``), runs the longer sequence and
drops the ``P`` prompt positions from its output, so callers see their own ``T`` positions. Unlike
prefixes (keys/values inside every attention layer, ``--encoder-prompt``) the prompts enter once,
at the input, and so work on every body.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

INPUT_PROMPT_INITS = ("normal",)


class InputPrompt(nn.Module):
    """``prompt`` [P, d]: ``(embeds [B, T, d], mask [B, T] | None) -> ([B, P+T, d], [B, P+T])``."""

    def __init__(self, length: int, width: int, std: float = 0.02,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        if length <= 0:
            raise ValueError(f"input_prompt_length must be > 0, got {length}")
        self.length, self.std = length, std
        self.prompt = nn.Parameter(torch.empty(length, width, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.prompt, std=self.std)

    def forward(self, embeds: Tensor, padding_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        bsz, seq_len = embeds.shape[:2]
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(bsz, -1, -1)  # [B, P, d]
        if padding_mask is None:
            padding_mask = torch.zeros(bsz, seq_len, dtype=torch.bool, device=embeds.device)
        keep = torch.zeros(bsz, self.length, dtype=torch.bool, device=embeds.device)
        return torch.cat([prompt, embeds], 1), torch.cat([keep, padding_mask], 1)

    def extra_repr(self) -> str:
        return f"length={self.length}, width={self.prompt.shape[1]}"
