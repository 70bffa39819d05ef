"""OFA multi-head attention: explicit scores with additive position bias, per-head scales, cache.

Differences from a textbook attention, all from OFA (specs/ofa.md §6):
* the query scale is (head_dim · scale_factor)^−0.5 (scale_factor = 2 in every release);
* an additive `attn_bias` (absolute + relative position terms) is added to the scores; it may be
  any shape that broadcasts to [B, H, Tq, Tk] (the encoder and decoder pass [1, H, Tq, Tk], built
  once for all samples) or OFA's [B·H, Tq, Tk];
* with `scale_heads`, head outputs are multiplied by a learned `c_attn` [H] before `out_proj`;
* softmax runs in fp32.

Extension hook (generic; PETL uses it): `self.prefix_provider`, a callable `provider(bsz) -> (k, v)`
with k, v shaped [bsz, H, P, head_dim]. When set, the P prefix keys/values are put in front of the
real keys/values after the incremental cache is read/written (the cache never stores them); the key
padding mask, `attn_bias` and the causal `attn_mask` get P leading "visible" columns. The returned
attention weights cover the real keys only. With no provider nothing changes.

Bias, causal mask and key padding (as a [B, 1, 1, Tk] term of 0 / −inf) are added to the scores in
place, in OFA's order, so no [B, H, Tq, Tk] copy of a bias is made. Two implementations give the
same numbers (tests/test_attention_paths.py): "explicit" (the reference: matmul, adds, fp32 softmax)
and "fused" (torch's `scaled_dot_product_attention` with the terms summed into one mask). "auto", the
default, takes the fused one off the CPU only: on the CPU it measured no faster (a mask that needs
gradients sends torch to its plain kernel; benchmarks/RESULTS.md). Attention weights
(`need_weights`) always come from the explicit path.

The projections are always called as modules (`self.q_proj(x)`), so wrappers that subclass
`nn.Linear` (LoRA) can replace them.
"""

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

ATTENTION_IMPLEMENTATIONS = ("auto", "explicit", "fused")
PrefixProvider = Callable[[int], Tuple[Tensor, Tensor]]
IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


@with_incremental_state
class MultiheadAttention(nn.Module):
    """Self- or cross-attention over [T, B, C] inputs with OFA's bias and scaling rules."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = True,
        self_attention: bool = False,
        encoder_decoder_attention: bool = False,
        scale_factor: float = 2.0,
        scale_heads: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = float(self.head_dim * scale_factor) ** -0.5
        self.dropout_p = dropout
        self.self_attention = self_attention
        self.encoder_decoder_attention = encoder_decoder_attention
        # c_attn is registered first so that state-dict order matches the official files.
        self.c_attn = nn.Parameter(torch.ones(num_heads)) if scale_heads else None
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.prefix_provider: Optional[PrefixProvider] = None
        self.implementation = "auto"  # see ATTENTION_IMPLEMENTATIONS / set_attention_implementation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Only the starting point of a model trained from scratch; OFA re-initialises afterwards.
        for lin in (self.k_proj, self.v_proj, self.q_proj):
            nn.init.xavier_uniform_(lin.weight, gain=2**-0.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        for lin in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    # -- incremental state -------------------------------------------------------------------
    def _get_input_buffer(self, incremental_state: Optional[IncrementalState]) -> Dict[str, Optional[Tensor]]:
        result = self.get_incremental_state(incremental_state, "attn_state")
        return result if result is not None else {}

    def _set_input_buffer(self, incremental_state: IncrementalState, buffer: Dict[str, Optional[Tensor]]):
        return self.set_incremental_state(incremental_state, "attn_state", buffer)

    def reorder_incremental_state(self, incremental_state: Optional[IncrementalState], new_order: Tensor):
        """Follow beam reordering; cross-attention buffers already at the new size are shared as-is."""
        buffer = self._get_input_buffer(incremental_state)
        if not buffer:
            return incremental_state
        for k, v in buffer.items():
            if v is None:
                continue
            if self.encoder_decoder_attention and v.size(0) == new_order.size(0):
                break
            buffer[k] = v.index_select(0, new_order)
        return self._set_input_buffer(incremental_state, buffer)

    # -- forward ------------------------------------------------------------------------------
    def _shape(self, x: Tensor, bsz: int) -> Tensor:
        # [T, B, C] -> [B, H, T, d]
        return x.contiguous().view(x.size(0), bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[IncrementalState] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        need_head_weights: bool = False,
        attn_bias: Optional[Tensor] = None,
        key_rows: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """query [Tq, B, C]; key/value [Tk, B, C], or [Tk, B0, C] with key_rows [B] giving each query
        sample's row (keys and values are then projected once per distinct row); key_padding_mask [B, Tk] (True = pad);
        attn_mask [Tq, Tk] additive; attn_bias additive, [B·H, Tq, Tk] or broadcastable to [B, H, Tq, Tk].
        Returns (output [Tq, B, C], weights [B, Tq, Tk] averaged over heads, or [H, B, Tq, Tk]
        with need_head_weights, or None)."""
        if need_head_weights:
            need_weights = True
        tgt_len, bsz, _ = query.shape
        H = self.num_heads

        buffer = None
        if incremental_state is not None:
            buffer = self._get_input_buffer(incremental_state)
            if static_kv and "prev_key" in buffer:
                key = value = None  # cross-attention k/v were computed at the first step

        q = self._shape(self.q_proj(query) * self.scaling, bsz)  # [B, H, Tq, d]
        k = v = None
        if self.self_attention:
            k = self._shape(self.k_proj(query), bsz)
            v = self._shape(self.v_proj(query), bsz)
        elif key is not None:
            k = self._shape(self.k_proj(key), key.size(1))
            v = self._shape(self.v_proj(key if value is None else value), key.size(1))
            if key_rows is not None:
                k, v = k.index_select(0, key_rows), v.index_select(0, key_rows)

        if buffer is not None:
            k, v, key_padding_mask = self._update_cache(buffer, k, v, key_padding_mask, bsz, static_kv)
            self._set_input_buffer(incremental_state, buffer)
        assert k is not None and v is not None
        src_len = k.size(2)
        if key_padding_mask is not None and key_padding_mask.size(1) != src_len:
            raise ValueError(f"key_padding_mask covers {key_padding_mask.size(1)} keys, expected {src_len}")

        num_prefix = 0
        if self.prefix_provider is not None:
            pk, pv = self.prefix_provider(bsz)  # each [B, H, P, d]
            num_prefix = pk.size(2)
            k = torch.cat([pk.to(k.dtype), k], dim=2)
            v = torch.cat([pv.to(v.dtype), v], dim=2)

        terms = self._additive_terms(attn_bias, attn_mask, key_padding_mask, bsz, tgt_len, src_len, q.dtype)
        if self._use_fused(need_weights, q):
            out = self._fused_attention(q, k, v, terms, num_prefix)
            probs = None
        else:
            out, probs = self._explicit_attention(q, k, v, terms, num_prefix)
        if self.c_attn is not None:
            out = out * self.c_attn.view(1, H, 1, 1).to(out.dtype)
        out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, self.embed_dim)  # [Tq, B, C]
        out = self.out_proj(out)

        weights = None
        if need_weights:
            assert probs is not None
            weights = probs[..., num_prefix:].transpose(0, 1)  # [H, B, Tq, src_len]
            if not need_head_weights:
                weights = weights.mean(dim=0)
        return out, weights

    def _additive_terms(
        self, attn_bias: Optional[Tensor], attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
        bsz: int, tgt_len: int, src_len: int, dtype: torch.dtype,
    ) -> List[Tensor]:
        """The score terms over the real keys, each broadcastable to [B, H, Tq, Tk], in OFA's order
        (bias, causal mask, padding); none of them is expanded to the batch."""
        terms: List[Tensor] = []
        if attn_bias is not None:
            if attn_bias.dim() == 3:  # the [B·H, Tq, Tk] layout of fairseq/OFA
                attn_bias = attn_bias.view(bsz, self.num_heads, tgt_len, src_len)
            terms.append(attn_bias.to(dtype))
        if attn_mask is not None:
            terms.append(attn_mask.to(dtype).view(1, 1, tgt_len, src_len))
        if key_padding_mask is not None:
            pad = key_padding_mask.to(torch.bool).view(bsz, 1, 1, src_len)
            terms.append(pad.to(dtype).masked_fill(pad, float("-inf")))  # [B, 1, 1, Tk]: 0 or -inf
        return terms

    def _use_fused(self, need_weights: bool, q: Tensor) -> bool:
        """scaled_dot_product_attention cannot return the weights; "auto" takes it off the CPU only,
        where it measured no faster (benchmarks/RESULTS.md)."""
        if need_weights or self.implementation == "explicit":
            return False
        return self.implementation == "fused" or q.device.type != "cpu"

    def _explicit_attention(
        self, q: Tensor, k: Tensor, v: Tensor, terms: List[Tensor], num_prefix: int
    ) -> Tuple[Tensor, Tensor]:
        """The reference path: scores, in-place broadcast adds, fp32 softmax, dropout, values."""
        scores = torch.matmul(q, k.transpose(2, 3))  # [B, H, Tq, P + src_len]
        real = scores[..., num_prefix:] if num_prefix else scores  # prefix columns: no bias, no mask
        for term in terms:
            real += term  # in place: matmul's backward does not need its output
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).type_as(scores)
        out = torch.matmul(F.dropout(probs, p=self.dropout_p, training=self.training), v)  # [B, H, Tq, d]
        return out, probs

    def _fused_attention(self, q: Tensor, k: Tensor, v: Tensor, terms: List[Tensor], num_prefix: int) -> Tensor:
        """torch's fused kernel with mask = the sum of the terms (one tensor, as SDPA takes it);
        scale 1 because q is already scaled. Dropout draws from its own stream."""
        mask = None
        if terms:
            mask = terms[0]
            for term in terms[1:]:
                mask = mask + term
            if num_prefix:
                full = mask.new_zeros(mask.shape[:-1] + (num_prefix + mask.size(-1),))
                full[..., num_prefix:] = mask
                mask = full
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0, scale=1.0
        )

    def _update_cache(
        self,
        buffer: Dict[str, Optional[Tensor]],
        k: Optional[Tensor],
        v: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        bsz: int,
        static_kv: bool,
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Append (self-attention) or reuse (static cross-attention) cached keys [B, H, t, d]."""
        prev_k, prev_v = buffer.get("prev_key"), buffer.get("prev_value")
        prev_mask = buffer.get("prev_key_padding_mask")
        if prev_k is not None and prev_v is not None:
            if static_kv:
                k, v, key_padding_mask = prev_k, prev_v, prev_mask
            else:
                assert k is not None and v is not None
                k = torch.cat([prev_k, k], dim=2)
                v = torch.cat([prev_v, v], dim=2)
                if prev_mask is not None or key_padding_mask is not None:
                    old = prev_mask if prev_mask is not None else k.new_zeros(bsz, prev_k.size(2), dtype=torch.bool)
                    new = (
                        key_padding_mask
                        if key_padding_mask is not None
                        else k.new_zeros(bsz, k.size(2) - prev_k.size(2), dtype=torch.bool)
                    )
                    key_padding_mask = torch.cat([old.to(torch.bool), new.to(torch.bool)], dim=1)
        buffer["prev_key"], buffer["prev_value"] = k, v
        buffer["prev_key_padding_mask"] = key_padding_mask
        assert k is not None and v is not None
        return k, v, key_padding_mask


def set_attention_implementation(model: nn.Module, implementation: str) -> int:
    """Choose "auto", "explicit" or "fused" for every OFA attention module in `model`; returns how many."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
    modules = [m for m in model.modules() if isinstance(m, MultiheadAttention)]
    for m in modules:
        m.implementation = implementation
    return len(modules)
