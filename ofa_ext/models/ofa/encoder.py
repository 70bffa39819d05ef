"""OFA encoder: ResNet patches + text tokens → pre-LN transformer with position biases.

Sequence layout: [image patches (row-major), text tokens]; see specs/ofa.md §4.
"""

from typing import Any, Dict, List, Optional

import torch
from fairseq.models import FairseqEncoder
from torch import Tensor, nn

from .drop_path import linear_rates
from .position_bias import abs_position_bias, encoder_rel_bias, encoder_rel_index, image_buckets
from .layers import EncoderLayer
from .positions import image_position_ids, num_image_relative_buckets, register_bucket_buffers
from .resnet import build_resnet, set_trunk_layout


def _ln(enabled: bool, dim: int) -> Optional[nn.LayerNorm]:
    return nn.LayerNorm(dim) if enabled else None


class OFAEncoder(FairseqEncoder):
    """Returns fairseq's encoder-out dict; `position_embeddings` feed the decoder's cross bias."""

    def __init__(self, cfg: Any, dictionary, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        C, H = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads = H
        self.padding_idx = embed_tokens.padding_idx
        self.max_source_positions = cfg.max_source_positions
        self.embed_scale = 1.0 if cfg.no_scale_embedding else C**0.5
        self.entangle_position_embedding = cfg.entangle_position_embedding
        self.dropout = cfg.dropout
        self.image_bucket_size = cfg.image_bucket_size
        self.pos_scaling = float(C / H * cfg.attn_scale_factor) ** -0.5

        register_bucket_buffers(self, cfg.token_bucket_size, cfg.image_bucket_size)

        self.embed_tokens = embed_tokens
        self.layernorm_embedding = _ln(cfg.layernorm_embedding, C)
        self.type_embedding = nn.Embedding(2, C) if cfg.add_type_embedding else None
        self.embed_images = build_resnet(cfg.resnet_type, cfg.resnet_drop_path_rate)
        set_trunk_layout(self.embed_images, getattr(cfg, "resnet_layout", "contiguous"))
        self.image_proj = nn.Linear(self.embed_images.out_channels, C)
        self.patch_layernorm_embedding = _ln(cfg.patch_layernorm_embedding, C)
        self.embed_positions = nn.Embedding(cfg.max_source_positions + 2, C)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, C)
        self.pos_ln = nn.LayerNorm(C)
        self.image_pos_ln = nn.LayerNorm(C)
        self.pos_q_linear = nn.Linear(C, C)
        self.pos_k_linear = nn.Linear(C, C)

        rates = linear_rates(cfg.encoder_drop_path_rate, cfg.encoder_layers)
        self.layers = nn.ModuleList(
            EncoderLayer(
                C, cfg.encoder_ffn_embed_dim, H, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                activation_dropout=cfg.activation_dropout or cfg.relu_dropout, drop_path_rate=rates[i],
                attn_scale_factor=cfg.attn_scale_factor, scale_attn=cfg.scale_attn, scale_fc=cfg.scale_fc,
                scale_heads=cfg.scale_heads, scale_resids=cfg.scale_resids,
            )
            for i in range(cfg.encoder_layers)
        )
        self.layer_norm = _ln(cfg.encoder_normalize_before, C)
        n_img = num_image_relative_buckets(cfg.image_bucket_size)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, H) for _ in range(cfg.encoder_layers)
        )
        self.image_rel_pos_table_list = nn.ModuleList(nn.Embedding(n_img, H) for _ in range(cfg.encoder_layers))
        self.rel_table_rows = (n_img, 2 * cfg.token_bucket_size - 1)  # (image, token) rows of every layer

    # -- embeddings ---------------------------------------------------------------------------
    def _embed_text(self, src_tokens: Tensor, token_embeddings: Optional[Tensor] = None) -> Tensor:
        if token_embeddings is None:
            token_embeddings = self.embed_tokens(src_tokens)
        x = self.embed_scale * token_embeddings  # [B, L, C]
        if self.entangle_position_embedding:
            x = x + self.embed_positions(self._text_positions(src_tokens))
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[0]
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        return nn.functional.dropout(x, p=self.dropout, training=self.training)

    def _embed_images(self, patch_images: Tensor):
        """→ (patch embeddings [B, N, C], position ids [N], the same for every sample)."""
        feats = self.embed_images(patch_images)  # [B, 1024, h, w] (256 for resnet_nano)
        _, _, h, w = feats.shape
        ids = image_position_ids(h, w, self.image_bucket_size, device=feats.device)
        x = self.image_proj(feats.flatten(2).transpose(1, 2))  # [B, h·w, C], row-major
        x = self.embed_scale * x
        if self.entangle_position_embedding:
            x = x + self.embed_image_positions(ids)
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[1]
        if self.patch_layernorm_embedding is not None:
            x = self.patch_layernorm_embedding(x)
        return nn.functional.dropout(x, p=self.dropout, training=self.training), ids

    @staticmethod
    def _text_positions(src_tokens: Tensor) -> Tensor:
        # 0 … L-1, the same for every sample, pads included (no padding offset)
        return torch.arange(src_tokens.size(1), device=src_tokens.device)

    def embed_inputs(self, src_tokens: Optional[Tensor], patch_images: Optional[Tensor] = None,
                     patch_masks: Optional[Tensor] = None, token_embeddings: Optional[Tensor] = None):
        """→ (x [B, N + L, C] image patches first, padding_mask [B, N + L], image position ids [N] or None).

        Text is embedded before images (the order of OFA's random draws in training mode);
        `token_embeddings`: `embed_tokens(src_tokens)` when the caller has looked them up already."""
        parts, pads, image_ids = [], [], None
        if src_tokens is not None:
            if src_tokens.size(1) > self.max_source_positions:
                raise ValueError(f"source length {src_tokens.size(1)} exceeds "
                                 f"max_source_positions={self.max_source_positions}")
            parts.append(self._embed_text(src_tokens, token_embeddings))
            pads.append(src_tokens.eq(self.padding_idx))
        if patch_images is not None:
            image_x, image_ids = self._embed_images(patch_images)
            bsz, num_patches = image_x.shape[:2]
            image_pad = torch.zeros(bsz, num_patches, dtype=torch.bool, device=image_x.device)
            if patch_masks is not None:
                image_pad = image_pad | ~patch_masks.to(torch.bool).view(bsz, 1)
            parts.insert(0, image_x)  # image first
            pads.insert(0, image_pad)
        return torch.cat(parts, dim=1), torch.cat(pads, dim=1), image_ids

    def position_embeddings(self, num_text: int, image_ids: Optional[Tensor]) -> Tensor:
        """Absolute position embeddings [1, N + L, C] (after image_pos_ln / pos_ln), images first:
        the same for every sample, broadcast wherever they are used. Text positions are 0 … L-1."""
        ids = torch.arange(num_text, device=self.embed_positions.weight.device)
        pos = self.pos_ln(self.embed_positions(ids))[None]  # [1, L, C]
        if image_ids is not None:
            pos = torch.cat([self.image_pos_ln(self.embed_image_positions(image_ids))[None], pos], dim=1)
        return pos

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor] = None,
        patch_images: Optional[Tensor] = None,
        patch_masks: Optional[Tensor] = None,
        return_all_hiddens: bool = False,
        token_embeddings: Optional[Tensor] = None,
        **unused,
    ) -> Dict[str, List[Tensor]]:
        """src_tokens [B, L] right-padded; patch_images [B, 3, H, W] or None; patch_masks [B] bool;
        token_embeddings: `embed_tokens(src_tokens)` when the caller has looked them up already."""
        x, padding_mask, image_ids = self.embed_inputs(src_tokens, patch_images, patch_masks, token_embeddings)
        pos = self.position_embeddings(src_tokens.size(1), image_ids)
        x, states = self.forward_embeddings(x, padding_mask, pos, image_ids, return_all_hiddens=return_all_hiddens)
        return {
            "encoder_out": [x],  # T x B x C
            "encoder_padding_mask": [padding_mask],  # B x T
            "encoder_embedding": [],
            "encoder_states": states,
            "src_tokens": [],
            "src_lengths": [],
            # 1 x T x C (the same for every sample; B x T x C is accepted too), after pos_ln / image_pos_ln
            "position_embeddings": [pos],
        }

    def forward_embeddings(
        self,
        x: Tensor,
        padding_mask: Tensor,
        pos: Tensor,
        image_ids: Optional[Tensor] = None,
        prefix_length: int = 0,
        return_all_hiddens: bool = False,
    ):
        """The layers from embeddings on: x [B, T, C] (image patches first, then text), padding_mask
        [B, T], pos [1, T - prefix_length, C] (after pos_ln / image_pos_ln), image_ids [N] of the N
        image patches or None → (hidden [T, B, C], states). The first `prefix_length` positions
        (prepended tokens) get zero position bias."""
        # OFA zeroes padded embeddings and masks padded keys only when some position is padding;
        # doing both unconditionally gives bit-identical results and keeps the forward free of
        # data-dependent branches (torch.func.vmap / per-sample gradients work).
        x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
        x = x.transpose(0, 1)  # [T, B, C]
        num_patches = 0 if image_ids is None else image_ids.size(0)
        src_len = pos.size(1) - num_patches  # text positions

        abs_bias = abs_position_bias(self.pos_q_linear, self.pos_k_linear, pos, pos, self.num_heads, self.pos_scaling)
        buckets = image_buckets(self.image_rp_bucket, image_ids) if image_ids is not None else None
        rel_index = encoder_rel_index(buckets, self.token_rp_bucket[:src_len, :src_len], *self.rel_table_rows)
        states: List[Tensor] = [x] if return_all_hiddens else []
        for idx, layer in enumerate(self.layers):
            # absolute + relative terms for one sample, [1, H, T', T']: attention broadcasts it over the batch
            image_table = self.image_rel_pos_table_list[idx] if buckets is not None else None
            bias = abs_bias + encoder_rel_bias(image_table, self.token_rel_pos_table_list[idx], rel_index)
            if prefix_length:
                bias = nn.functional.pad(bias, (prefix_length, 0, prefix_length, 0))  # [1, H, T, T]
            x = layer(x, padding_mask, self_attn_bias=bias)
            if return_all_hiddens:
                states.append(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x, states

    def forward_torchscript(self, net_input: Dict[str, Tensor]):
        """fairseq's generator entry point: drop decoder-only inputs."""
        return self.forward(**{k: v for k, v in net_input.items() if k != "prev_output_tokens"})

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        """Index-select along the batch: dim 1 of [T, B, C] tensors, dim 0 of the others. The states
        before any reordering are kept too ("encoder_out_distinct", with "encoder_rows": the row of
        each new sample among them): beam search repeats every source beam times, and the decoder's
        cross-attention then projects keys and values once per source, not once per hypothesis."""
        def sel(key: str, dim: int) -> List[Tensor]:
            return [t.index_select(dim, new_order) for t in encoder_out.get(key, [])]

        def shared_or_sel(key: str) -> List[Tensor]:  # one row shared by all samples stays one row
            return [t if t.size(0) == 1 else t.index_select(0, new_order) for t in encoder_out.get(key, [])]

        distinct, rows = encoder_out.get("encoder_out_distinct"), encoder_out.get("encoder_rows")
        if not distinct:
            distinct, rows = encoder_out.get("encoder_out", []), [new_order]
        else:
            rows = [rows[0].index_select(0, new_order)]
        return {
            "encoder_out": sel("encoder_out", 1),
            "encoder_out_distinct": distinct,
            "encoder_rows": rows if distinct else [],
            "encoder_padding_mask": sel("encoder_padding_mask", 0),
            "encoder_embedding": sel("encoder_embedding", 0),
            "encoder_states": sel("encoder_states", 1),
            "src_tokens": sel("src_tokens", 0),
            "src_lengths": sel("src_lengths", 0),
            "position_embeddings": shared_or_sel("position_embeddings"),
        }

    def max_positions(self) -> int:
        return self.max_source_positions
