"""ORCA's embedders: a target input → ``(B, T, d)`` tokens for a body (`specs/orca.md` §3).

* :class:`Embedder1D` — ``(B, C, L)`` → ``Conv1d(C → d, kernel = stride = stack_num)`` →
  LayerNorm → + learned positions. ``stack_num`` is ORCA's rule: the smallest divisor ``s`` of
  ``L`` with ``L / s <= target_seq_len``.
* :class:`Embedder2D` — ``(B, C, H, W)`` → optional bilinear resize → zero-pad right/bottom to a
  multiple of the patch → ``Conv2d(C → d, patch, stride patch)`` → flatten → LayerNorm (ORCA adds no
  positions, Swin has relative ones; ``positions=True`` adds learned ones for bodies that need them).
* :class:`TabularEmbedder` — table rows in ORCA's two layouts, through :class:`Embedder1D`:
  ``channels`` = all F features as channels of one step (one token), ``features`` = one position
  per feature (``(B, F)`` rows, or ``(B, W, F)`` one-hot rows from ``data/tabular.py``).

Initialisation follows ORCA's code (`init_from`): the LayerNorm and the position table are copied
from the body's input embedding, a 2-D patch kernel is tiled over the input channels; convolutions
otherwise start Xavier-uniform (gain √2, bias 0). ``reset_parameters(random=True)`` is ORCA's
no-copy branch: truncated normal(0.02) weights, LayerNorm (1, 0).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .init_parts import InitParts


def stack_num(length: int, target_seq_len: int) -> int:
    """ORCA's rule: the smallest divisor ``s`` of ``length`` with ``length / s <= target_seq_len``."""
    if length < 1 or target_seq_len < 1:
        raise ValueError(f"length and target_seq_len must be >= 1, got {length} and {target_seq_len}")
    return next(s for s in range(1, length + 1) if length % s == 0 and length // s <= target_seq_len)


def _xavier(conv: nn.Module) -> None:
    nn.init.xavier_uniform_(conv.weight, gain=math.sqrt(2.0))
    nn.init.zeros_(conv.bias)


def _random(conv: nn.Module, norm: nn.LayerNorm, positions: Optional[nn.Embedding]) -> None:
    nn.init.trunc_normal_(conv.weight, std=0.02)
    nn.init.zeros_(conv.bias)
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    if positions is not None:
        nn.init.trunc_normal_(positions.weight, std=0.02)


def _copy_layernorm(norm: nn.LayerNorm, parts: InitParts) -> bool:
    src = parts.layernorm
    if src is None or src.weight is None or src.weight.shape != norm.weight.shape:
        return False
    with torch.no_grad():
        norm.weight.copy_(src.weight)
        norm.bias.copy_(src.bias)
    norm.eps = src.eps  # BERT uses 1e-12, torch's default is 1e-5
    return True


class _Positions(nn.Module):
    """Learned absolute positions ``offset, offset+1, …`` (RoBERTa starts at 2, BERT at 0)."""

    def __init__(self, n_tokens: int, width: int, table_size: int, offset: int, device=None, dtype=None):
        super().__init__()
        if n_tokens + offset > table_size:
            raise ValueError(f"{n_tokens} tokens from position {offset} need a position table of at least "
                             f"{n_tokens + offset} rows, the body has {table_size} (lower --target-seq-len)")
        self.offset = offset
        self.embedding = nn.Embedding(table_size, width, device=device, dtype=dtype)
        self.register_buffer("ids", torch.arange(offset, offset + n_tokens, device=device), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens + self.embedding(self.ids)  # (B, T, d) + (T, d)

    def copy_from(self, parts: InitParts) -> bool:
        table = parts.positions
        if table is None or table.shape != self.embedding.weight.shape:
            return False
        with torch.no_grad():
            self.embedding.weight.copy_(table)
        return True


class Embedder1D(nn.Module):
    """``(B, C, L)`` → ``(B, L / stack_num, d)``; see the module docstring."""

    def __init__(self, in_channels: int, length: int, width: int, target_seq_len: int = 512, positions: bool = True,
                 position_table: int = 512, position_offset: int = 0, device=None, dtype=None):
        super().__init__()
        self.in_channels, self.length, self.width = in_channels, length, width
        self.stack_num = stack_num(length, target_seq_len)
        self.n_tokens = length // self.stack_num
        self.projection = nn.Conv1d(in_channels, width, self.stack_num, stride=self.stack_num, device=device, dtype=dtype)
        self.norm = nn.LayerNorm(width, device=device, dtype=dtype)
        self.positions = (_Positions(self.n_tokens, width, position_table, position_offset, device, dtype)
                          if positions else None)
        self.reset_parameters()

    def reset_parameters(self, random: bool = False) -> None:
        table = None if self.positions is None else self.positions.embedding
        if random:
            _random(self.projection, self.norm, table)
            return
        _xavier(self.projection)
        self.norm.reset_parameters()
        if table is not None:
            nn.init.normal_(table.weight)  # nn.Embedding's own init until init_from copies

    def init_from(self, parts: InitParts) -> list:
        """Copy the body's embedding LayerNorm and position table (ORCA); returns what was copied."""
        copied = []
        if _copy_layernorm(self.norm, parts):
            copied.append("layernorm")
        if self.positions is not None and self.positions.copy_from(parts):
            copied.append("positions")
        return copied

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.length:
            raise ValueError(f"1-D embedder built for inputs (B, {self.in_channels} channels, length {self.length}) "
                             f"got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Tokens ``(B, T, d)`` and the padding mask (``None``: every token is real)."""
        self.check_input(x)
        tokens = self.norm(self.projection(x).transpose(1, 2))  # (B, d, T) -> (B, T, d)
        return (tokens if self.positions is None else self.positions(tokens)), None


class Embedder2D(nn.Module):
    """``(B, C, H, W)`` → ``(B, h·w, d)`` patch tokens; see the module docstring."""

    def __init__(self, in_channels: int, size: Sequence[int], width: int, patch: int = 4, resize: Optional[int] = None,
                 positions: bool = False, position_table: int = 512, position_offset: int = 0, device=None, dtype=None):
        super().__init__()
        self.in_channels, self.size, self.width, self.patch, self.resize = in_channels, tuple(size), width, patch, resize
        h, w = (resize, resize) if resize else self.size
        self.grid = (math.ceil(h / patch), math.ceil(w / patch))
        self.n_tokens = self.grid[0] * self.grid[1]
        self.projection = nn.Conv2d(in_channels, width, patch, stride=patch, device=device, dtype=dtype)
        self.norm = nn.LayerNorm(width, device=device, dtype=dtype)
        self.positions = (_Positions(self.n_tokens, width, position_table, position_offset, device, dtype)
                          if positions else None)
        self.reset_parameters()

    def reset_parameters(self, random: bool = False) -> None:
        if random:
            _random(self.projection, self.norm, None if self.positions is None else self.positions.embedding)
            return
        _xavier(self.projection)
        self.norm.reset_parameters()
        if self.positions is not None:
            nn.init.normal_(self.positions.embedding.weight)

    def init_from(self, parts: InitParts) -> list:
        """ORCA: tile the body's patch kernel ``(d, 3, p, p)`` ⌊C/3⌋+1 times along the input channels,
        crop to C, copy its bias; copy the LayerNorm (and positions when used)."""
        copied = []
        conv = parts.patch_conv
        if conv is not None and conv.weight.shape[0] == self.width and conv.weight.shape[2:] == self.projection.weight.shape[2:]:
            reps = self.in_channels // conv.weight.shape[1] + 1
            with torch.no_grad():
                self.projection.weight.copy_(conv.weight.repeat(1, reps, 1, 1)[:, :self.in_channels])
                if conv.bias is not None:
                    self.projection.bias.copy_(conv.bias)
            copied.append("patch_conv")
        if _copy_layernorm(self.norm, parts):
            copied.append("layernorm")
        if self.positions is not None and self.positions.copy_from(parts):
            copied.append("positions")
        return copied

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.size:
            raise ValueError(f"2-D embedder built for inputs (B, {self.in_channels} channels, {self.size[0]}x{self.size[1]}) "
                             f"got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        self.check_input(x)
        if self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=True)
        pad_h, pad_w = (-x.shape[2]) % self.patch, (-x.shape[3]) % self.patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zero-pad right and bottom to a multiple of the patch
        tokens = self.norm(self.projection(x).flatten(2).transpose(1, 2))  # (B, d, h, w) -> (B, h*w, d)
        return (tokens if self.positions is None else self.positions(tokens)), None


TABULAR_LAYOUTS = ("channels", "features")


class TabularEmbedder(nn.Module):
    """Table rows → tokens in ORCA's two layouts (see the module docstring)."""

    def __init__(self, sample_shape: Sequence[int], width: int, layout: str = "channels", target_seq_len: int = 512,
                 positions: bool = True, position_table: int = 512, position_offset: int = 0, device=None, dtype=None):
        super().__init__()
        if layout not in TABULAR_LAYOUTS:
            raise ValueError(f"--tabular-layout must be one of {TABULAR_LAYOUTS}, got {layout!r}")
        shape = tuple(sample_shape)
        if len(shape) not in (1, 2) or (len(shape) == 2 and layout == "channels"):
            raise ValueError(f"tabular rows must be (F,) features (or (W, F) one-hot rows with --tabular-layout "
                             f"features), got sample shape {shape}")
        self.sample_shape, self.layout = shape, layout
        channels, length = (shape[0], 1) if layout == "channels" else ((1,) + shape)[-2:]
        self.inner = Embedder1D(channels, length, width, target_seq_len, positions, position_table, position_offset,
                                device, dtype)
        self.n_tokens, self.width = self.inner.n_tokens, width

    def reset_parameters(self, random: bool = False) -> None:
        self.inner.reset_parameters(random)

    def init_from(self, parts: InitParts) -> list:
        return self.inner.init_from(parts)

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"tabular embedder built for rows of shape {self.sample_shape}, got {tuple(x.shape[1:])}")
        if self.layout == "channels":
            x = x.unsqueeze(-1)  # (B, F) -> (B, F, 1): every feature a channel of one step
        elif x.dim() == 2:
            x = x.unsqueeze(1)  # (B, F) -> (B, 1, F): every feature a position
        return self.inner(x)
