"""Pre-LN encoder and decoder layers of OFA (specs/ofa.md §4.8, §5.3).

Optional pieces behind OFA's flags: `attn_ln` / `self_attn_ln` / `cross_attn_ln` (scale_attn),
`ffn_layernorm` (scale_fc), `c_attn` inside attention (scale_heads), `w_resid` (scale_resids).

Extension hooks (generic; PETL replaces them): `post_attn` and `post_ffn`, two parameter-free
`nn.Identity` modules applied to the self-attention branch (after out_proj → *_ln → dropout) and to
the FFN branch (after fc2 → dropout), each right before drop path and the residual add. The decoder's
cross-attention branch has no hook (π-Tuning places nothing there).
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import IncrementalState, MultiheadAttention
from .drop_path import DropPath


def gelu_fp32(x: Tensor) -> Tensor:
    """Exact (erf) GELU computed in fp32 and cast back, as fairseq's `gelu`."""
    return F.gelu(x.float()).type_as(x)


def _optional_ln(enabled: bool, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if enabled else nn.Identity()


class _FFN(nn.Module):
    """Mixin with the shared feed-forward branch: fc1 → GELU → act-dropout → ffn_layernorm → fc2 → dropout."""

    fc1: nn.Linear
    fc2: nn.Linear
    ffn_layernorm: nn.Module
    activation_dropout: float
    dropout: float

    def _ffn(self, x: Tensor) -> Tensor:
        x = gelu_fp32(self.fc1(x))
        x = F.dropout(x, p=self.activation_dropout, training=self.training)
        x = self.ffn_layernorm(x)
        x = self.fc2(x)
        return F.dropout(x, p=self.dropout, training=self.training)

    def _residual(self, residual: Tensor, branch: Tensor, scaled: bool = False) -> Tensor:
        # OFA's scale_resids (never used in releases) scales the FFN block's residual only
        w = getattr(self, "w_resid", None)
        if scaled and w is not None:
            residual = residual * w
        return residual + self.drop_path(branch)


class EncoderLayer(_FFN):
    """x = x + drop_path(post_attn(drop(attn_ln(attn(ln(x))))));  x = x + drop_path(post_ffn(ffn(ln(x))))."""

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_scale_factor: float = 2.0,
        scale_attn: bool = False,
        scale_fc: bool = False,
        scale_heads: bool = False,
        scale_resids: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        self.self_attn = MultiheadAttention(
            embed_dim, num_heads, dropout=attention_dropout, self_attention=True,
            scale_factor=attn_scale_factor, scale_heads=scale_heads,
        )
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.attn_ln = _optional_ln(scale_attn, embed_dim)
        self.ffn_layernorm = _optional_ln(scale_fc, ffn_dim)
        self.w_resid = nn.Parameter(torch.ones(embed_dim)) if scale_resids else None
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.drop_path = DropPath(drop_path_rate, batch_dim=1)
        self.post_attn = nn.Identity()
        self.post_ffn = nn.Identity()

    def forward(
        self, x: Tensor, encoder_padding_mask: Optional[Tensor], self_attn_bias: Optional[Tensor] = None
    ) -> Tensor:
        """x [T, B, C]; encoder_padding_mask [B, T] or None; self_attn_bias broadcastable to [B, H, T, T]."""
        residual = x
        x = self.self_attn_layer_norm(x)
        x, _ = self.self_attn(
            x, x, x, key_padding_mask=encoder_padding_mask, need_weights=False, attn_bias=self_attn_bias
        )
        x = self.attn_ln(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = self._residual(residual, self.post_attn(x))
        residual = x
        x = self.post_ffn(self._ffn(self.final_layer_norm(x)))
        return self._residual(residual, x, scaled=True)


class DecoderLayer(_FFN):
    """Self-attention, cross-attention and FFN blocks, each pre-LN with drop path on the branch."""

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        encoder_embed_dim: Optional[int] = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_scale_factor: float = 2.0,
        scale_attn: bool = False,
        scale_fc: bool = False,
        scale_heads: bool = False,
        scale_resids: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        # registration order follows the official state dict
        self.self_attn = MultiheadAttention(
            embed_dim, num_heads, dropout=attention_dropout, self_attention=True,
            scale_factor=attn_scale_factor, scale_heads=scale_heads,
        )
        self.self_attn_ln = _optional_ln(scale_attn, embed_dim)
        self.cross_attn_ln = _optional_ln(scale_attn, embed_dim)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        enc_dim = encoder_embed_dim or embed_dim
        self.encoder_attn = MultiheadAttention(
            embed_dim, num_heads, kdim=enc_dim, vdim=enc_dim, dropout=attention_dropout,
            encoder_decoder_attention=True, scale_factor=attn_scale_factor, scale_heads=scale_heads,
        )
        self.encoder_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.ffn_layernorm = _optional_ln(scale_fc, ffn_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.w_resid = nn.Parameter(torch.ones(embed_dim)) if scale_resids else None
        self.drop_path = DropPath(drop_path_rate, batch_dim=1)
        self.post_attn = nn.Identity()
        self.post_ffn = nn.Identity()

    def forward(
        self,
        x: Tensor,
        encoder_out: Optional[Tensor],
        encoder_padding_mask: Optional[Tensor],
        incremental_state: Optional[IncrementalState] = None,
        self_attn_mask: Optional[Tensor] = None,
        self_attn_padding_mask: Optional[Tensor] = None,
        need_attn: bool = False,
        need_head_weights: bool = False,
        self_attn_bias: Optional[Tensor] = None,
        cross_attn_bias: Optional[Tensor] = None,
        encoder_rows: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """x [T, B, C]; encoder_out [S, B, C] (or [S, B0, C] with encoder_rows [B]: the row of each
        sample); biases broadcastable to [B, H, T, T] / [B, H, T, S].
        Returns (x, cross-attention weights or None)."""
        residual = x
        x = self.self_attn_layer_norm(x)
        x, _ = self.self_attn(
            x, x, x, key_padding_mask=self_attn_padding_mask, incremental_state=incremental_state,
            need_weights=False, attn_mask=self_attn_mask, attn_bias=self_attn_bias,
        )
        x = self.self_attn_ln(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = self._residual(residual, self.post_attn(x))

        attn = None
        if encoder_out is not None:
            residual = x
            x = self.encoder_attn_layer_norm(x)
            x, attn = self.encoder_attn(
                x, encoder_out, encoder_out, key_padding_mask=encoder_padding_mask,
                incremental_state=incremental_state, static_kv=True,
                need_weights=need_attn or need_head_weights, need_head_weights=need_head_weights,
                attn_bias=cross_attn_bias, key_rows=encoder_rows,
            )
            x = self.cross_attn_ln(x)
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = self._residual(residual, x)

        residual = x
        x = self.post_ffn(self._ffn(self.final_layer_norm(x)))
        return self._residual(residual, x, scaled=True), attn
