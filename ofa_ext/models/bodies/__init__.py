"""Pretrained bodies behind one interface (``base.Body``): OFA's encoder, Hugging Face encoders, CLIP towers."""

from .base import Body, BodyInput, SiteTable, find_bodies, last_token_pool, mean_pool

__all__ = ["Body", "BodyInput", "SiteTable", "find_bodies", "last_token_pool", "mean_pool"]
