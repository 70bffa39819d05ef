"""Prefix prompts: a prompt encoder per stack and per-layer providers for attention modules."""

from .layer import PrefixProvider, PromptEncoder

__all__ = ["PrefixProvider", "PromptEncoder"]
