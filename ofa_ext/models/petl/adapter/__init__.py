"""Bottleneck adapters: in the backbone's `post_attn` / `post_ffn` identity slots, or after a projection."""

from .layer import ADAPTER_INITS, Adapter, LinearThenAdapter

__all__ = ["ADAPTER_INITS", "Adapter", "LinearThenAdapter"]
