"""A tiny encoder-decoder with OFA's module names and the backbone's PETL hooks.

It states in code the contract that ``apply_petl`` relies on (and that ``models/ofa`` provides):
* layers at ``encoder.layers.{l}`` / ``decoder.layers.{l}`` with ``self_attn`` (and
  ``encoder_attn`` in the decoder), ``fc1``/``fc2`` as ``nn.Linear`` modules, and two
  ``nn.Identity`` slots ``post_attn`` / ``post_ffn`` right before the residual adds;
* attention modules with ``num_heads``, ``head_dim`` and ``prefix_provider = None``; a provider
  ``provider(bsz) -> (k, v)`` [bsz, H, P, d] is prepended to keys/values, masks are extended
  with zeros and the incremental cache never stores the prefix;
* ``optional_state_keys``: keys a backbone checkpoint may lack.
Used by the PETL tests so that the library is tested independently of the real backbone.
Batch-first tensors [B, T, C] (OFA is time-first; PETL does not care).
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class ToyAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.prefix_provider = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, T, d]

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        cache: Optional[Dict[str, torch.Tensor]] = None,
    ) -> torch.Tensor:
        B, Tq, C = query.shape
        q = self._heads(self.q_proj(query)) * self.head_dim**-0.5
        k, v = self._heads(self.k_proj(key)), self._heads(self.v_proj(key))
        if cache is not None:  # incremental self-attention: append this step's k/v
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        scores = q @ k.transpose(-1, -2)  # [B, H, Tq, Tk]
        if causal and cache is None:
            Tk = k.shape[2]
            scores = scores.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).triu(1), float("-inf"))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if self.prefix_provider is not None:  # prefix columns: no mask, no bias
            pk, pv = self.prefix_provider(B)
            scores = torch.cat([q @ pk.transpose(-1, -2), scores], -1)
            v = torch.cat([pv, v], 2)
        o = scores.softmax(-1) @ v  # [B, H, Tq, d]
        return self.out_proj(o.transpose(1, 2).reshape(B, Tq, C))


class ToyLayer(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, cross: bool) -> None:
        super().__init__()
        self.self_attn = ToyAttention(embed_dim, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.post_attn = nn.Identity()
        if cross:
            self.encoder_attn = ToyAttention(embed_dim, num_heads)
            self.encoder_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.post_ffn = nn.Identity()

    def forward(self, x, pad=None, enc=None, enc_pad=None, causal=False, cache=None):
        h = self.self_attn_layer_norm(x)
        x = x + self.post_attn(self.self_attn(h, h, pad, causal, cache))
        if enc is not None:
            h = self.encoder_attn_layer_norm(x)
            x = x + self.encoder_attn(h, enc, enc_pad)
        h = self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        return x + self.post_ffn(h)


class ToyStack(nn.Module):
    def __init__(self, embed: nn.Embedding, layers: int, heads: int, ffn: int, cross: bool) -> None:
        super().__init__()
        C = embed.embedding_dim
        self.embed_tokens = embed
        self.embed_positions = nn.Embedding(64, C)
        self.layernorm_embedding = nn.LayerNorm(C)
        self.layers = nn.ModuleList(ToyLayer(C, heads, ffn, cross) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(C)

    def embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        return self.layernorm_embedding(self.embed_tokens(tokens) + self.embed_positions(pos))


class ToyOFA(nn.Module):
    """``forward(src_tokens, prev_output_tokens) -> logits`` [B, T, V]; ``decode_incremental``."""

    def __init__(self, vocab: int = 50, embed_dim: int = 32, heads: int = 4, ffn: int = 64, layers: int = 2) -> None:
        super().__init__()
        embed = nn.Embedding(vocab, embed_dim, padding_idx=1)
        self.encoder = ToyStack(embed, layers, heads, ffn, cross=False)
        self.decoder = ToyStack(embed, layers, heads, ffn, cross=True)
        self.decoder.output_projection = nn.Linear(embed_dim, vocab, bias=False)
        self.decoder.output_projection.weight = embed.weight  # tied, as OFA
        self.optional_state_keys: set = set()

    def encode(self, src_tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pad = src_tokens.eq(1)
        x = self.encoder.embed(src_tokens)
        for layer in self.encoder.layers:
            x = layer(x, pad=pad)
        return self.encoder.layer_norm(x), pad

    def decode(self, prev, enc, enc_pad, caches: Optional[List[dict]] = None, start: int = 0):
        x = self.decoder.embed(prev, start)
        for i, layer in enumerate(self.decoder.layers):
            cache = None if caches is None else caches[i]
            x = layer(x, enc=enc, enc_pad=enc_pad, causal=True, cache=cache)
        return self.decoder.output_projection(self.decoder.layer_norm(x))

    def forward(self, src_tokens: torch.Tensor, prev_output_tokens: torch.Tensor) -> torch.Tensor:
        enc, enc_pad = self.encode(src_tokens)
        return self.decode(prev_output_tokens, enc, enc_pad)

    def decode_incremental(self, src_tokens: torch.Tensor, prev_output_tokens: torch.Tensor) -> torch.Tensor:
        """Logits of every position computed one token at a time through the k/v cache."""
        enc, enc_pad = self.encode(src_tokens)
        caches: List[dict] = [{} for _ in self.decoder.layers]
        steps = [self.decode(prev_output_tokens[:, t : t + 1], enc, enc_pad, caches, start=t)
                 for t in range(prev_output_tokens.shape[1])]
        return torch.cat(steps, 1)
