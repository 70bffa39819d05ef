"""Bottleneck adapters (replace the backbone's `post_attn` / `post_ffn` identity slots)."""

from .layer import ADAPTER_INITS, Adapter

__all__ = ["ADAPTER_INITS", "Adapter"]
