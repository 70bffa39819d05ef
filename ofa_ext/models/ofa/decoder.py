"""OFA decoder: causal pre-LN transformer with self/cross position biases and a tied output layer.

Incremental decoding follows fairseq's SequenceGenerator (specs/ofa.md §5.5): the full prefix is
passed at every step; position biases are computed for the newest query row only (and for one
sample: positions are the same for all); attention modules cache keys/values in `incremental_state`.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.models import FairseqIncrementalDecoder
from torch import Tensor, nn

from .attention import IncrementalState
from .drop_path import linear_rates
from .position_bias import abs_position_bias, token_rel_bias
from .layers import DecoderLayer
from .positions import make_code_image_position_idx, num_image_relative_buckets, register_bucket_buffers


class OFADecoder(FairseqIncrementalDecoder):
    """forward(prev_output_tokens, encoder_out, incremental_state) → (logits or features, extra)."""

    def __init__(self, cfg: Any, dictionary, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        C, H = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        for name in ("decoder_output_dim", "decoder_input_dim"):
            if getattr(cfg, name, C) != C:
                raise ValueError(f"{name}={getattr(cfg, name)} must equal decoder_embed_dim={C} (no projections in OFA)")
        self.num_heads = H
        self.padding_idx = embed_tokens.padding_idx
        self.max_target_positions = cfg.max_target_positions
        self.embed_scale = 1.0 if cfg.no_scale_embedding else C**0.5
        self.add_positions_to_input = not cfg.disable_entangle
        self.dropout = cfg.dropout
        self.pos_scaling = float(C / H * cfg.attn_scale_factor) ** -0.5

        register_bucket_buffers(self, cfg.token_bucket_size, cfg.image_bucket_size)
        self.register_buffer(
            "image_position_idx",
            make_code_image_position_idx(cfg.code_image_size // 8, cfg.image_bucket_size, cfg.max_target_positions + 2),
        )

        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(C) if cfg.layernorm_embedding else None
        self.embed_positions = nn.Embedding(cfg.max_target_positions + 2, C)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, C)
        self.pos_ln = nn.LayerNorm(C)
        self.image_pos_ln = nn.LayerNorm(C)
        self.self_pos_q_linear = nn.Linear(C, C)
        self.self_pos_k_linear = nn.Linear(C, C)
        self.cross_pos_q_linear = nn.Linear(C, C)
        self.cross_pos_k_linear = nn.Linear(C, C)
        # kept for key compatibility; only image-code generation (out of scope) would use it
        self.code_layernorm_embedding = nn.LayerNorm(C) if cfg.code_layernorm_embedding else None

        rates = linear_rates(cfg.decoder_drop_path_rate, cfg.decoder_layers)
        self.layers = nn.ModuleList(
            DecoderLayer(
                C, cfg.decoder_ffn_embed_dim, H, encoder_embed_dim=cfg.encoder_embed_dim, dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout or cfg.relu_dropout,
                drop_path_rate=rates[i], attn_scale_factor=cfg.attn_scale_factor, scale_attn=cfg.scale_attn,
                scale_fc=cfg.scale_fc, scale_heads=cfg.scale_heads, scale_resids=cfg.scale_resids,
            )
            for i in range(cfg.decoder_layers)
        )
        self.num_layers = len(self.layers)
        self.layer_norm = nn.LayerNorm(C) if cfg.decoder_normalize_before else None
        self.output_projection = nn.Linear(C, embed_tokens.num_embeddings, bias=False)
        if cfg.share_decoder_input_output_embed:
            self.output_projection.weight = embed_tokens.weight
        else:
            nn.init.normal_(self.output_projection.weight, mean=0, std=C**-0.5)
        n_img = num_image_relative_buckets(cfg.image_bucket_size)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, H) for _ in range(cfg.decoder_layers)
        )
        self.image_rel_pos_table_list = nn.ModuleList(nn.Embedding(n_img, H) for _ in range(cfg.decoder_layers))
        self._future_mask = torch.empty(0)

    def _causal_mask(self, length: int, like: Tensor) -> Tensor:
        """[T, T] additive mask, −inf above the diagonal (cached, grown on demand)."""
        m = self._future_mask
        if m.size(0) < length or m.device != like.device:
            m = torch.triu(torch.full((length, length), float("-inf"), device=like.device), 1)
            self._future_mask = m
        return m[:length, :length].to(like.dtype)

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: Optional[IncrementalState] = None,
        features_only: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
        src_lengths: Optional[Any] = None,
        return_all_hiddens: bool = False,
        token_embeddings: Optional[Tensor] = None,
        **unused,
    ) -> Tuple[Tensor, Dict[str, Any]]:
        x, extra = self.extract_features(
            prev_output_tokens, encoder_out, incremental_state, alignment_layer, alignment_heads,
            token_embeddings=token_embeddings,
        )
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: Optional[IncrementalState] = None,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
        token_embeddings: Optional[Tensor] = None,
        **unused,
    ) -> Tuple[Tensor, Dict[str, Any]]:
        """prev_output_tokens [B, T] (the full prefix, also when decoding incrementally) → [B, T', C];
        token_embeddings: `embed_tokens(prev_output_tokens)` when the caller has looked them up
        already (ignored when decoding incrementally)."""
        bsz, tgt_len = prev_output_tokens.shape
        if tgt_len > self.max_target_positions:
            raise ValueError(f"target length {tgt_len} exceeds max_target_positions={self.max_target_positions}")
        if alignment_layer is None:
            alignment_layer = self.num_layers - 1
        enc = enc_pad = src_pos = enc_rows = None
        if encoder_out is not None and len(encoder_out.get("encoder_out", [])) > 0:
            enc = encoder_out["encoder_out"][0]
            if encoder_out.get("encoder_rows"):  # reordered (beam search): keys/values once per distinct source
                enc, enc_rows = encoder_out["encoder_out_distinct"][0], encoder_out["encoder_rows"][0]
            enc_pad = encoder_out["encoder_padding_mask"][0] if encoder_out.get("encoder_padding_mask") else None
            src_pos = encoder_out["position_embeddings"][0]

        # positions are the same for every sample: biases for one sample, broadcast over the batch;
        # decoding incrementally, only the newest query row goes through the layers
        rows = 1 if incremental_state is not None else tgt_len
        raw_pos = self.embed_positions(torch.arange(tgt_len, device=prev_output_tokens.device))[None]  # [1, T, C]
        tgt_pos = self.pos_ln(raw_pos)
        self_abs = abs_position_bias(
            self.self_pos_q_linear, self.self_pos_k_linear, tgt_pos[:, -rows:], tgt_pos, self.num_heads, self.pos_scaling
        )  # [1, H, rows, T]
        cross_bias = None
        if src_pos is not None:
            cross_bias = abs_position_bias(
                self.cross_pos_q_linear, self.cross_pos_k_linear, tgt_pos[:, -rows:], src_pos, self.num_heads,
                self.pos_scaling,
            )  # [1 (or B), H, rows, S]

        if incremental_state is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
            token_embeddings = None
        raw_pos = raw_pos[:, -rows:]

        if token_embeddings is None:
            token_embeddings = self.embed_tokens(prev_output_tokens)
        x = self.embed_scale * token_embeddings
        if self.add_positions_to_input:
            x = x + raw_pos
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = x.transpose(0, 1)  # [T', B, C]

        self_pad = prev_output_tokens.eq(self.padding_idx)  # always passed: no data-dependent branch
        causal = self._causal_mask(tgt_len, x) if incremental_state is None else None

        attn: Optional[Tensor] = None
        inner_states: List[Optional[Tensor]] = [x]
        for idx, layer in enumerate(self.layers):
            self_bias = self_abs + token_rel_bias(
                self.token_rel_pos_table_list[idx], self.token_rp_bucket, tgt_len, rows
            )  # [1, H, rows, T]
            x, layer_attn = layer(
                x, enc, enc_pad, incremental_state, self_attn_mask=causal, self_attn_padding_mask=self_pad,
                need_attn=idx == alignment_layer, need_head_weights=idx == alignment_layer,
                self_attn_bias=self_bias, cross_attn_bias=cross_bias, encoder_rows=enc_rows,
            )
            inner_states.append(x)
            if layer_attn is not None and idx == alignment_layer:
                attn = layer_attn.float().to(x)
        if attn is not None:
            if alignment_heads is not None:
                attn = attn[:alignment_heads]
            attn = attn.mean(dim=0)  # [B, T', S]
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x.transpose(0, 1), {"attn": [attn], "inner_states": inner_states}

    def output_layer(self, features: Tensor) -> Tensor:
        # contiguous: a transposed input sends the vocabulary matmul to a slower kernel (~1.6x on CPU)
        return self.output_projection(features.contiguous())

    def max_positions(self) -> int:
        return self.max_target_positions
