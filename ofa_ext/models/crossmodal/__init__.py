"""Cross-modal pieces around a body: ORCA's embedders (1-D, 2-D, tabular) and heads."""

from .embedders import TABULAR_LAYOUTS, Embedder1D, Embedder2D, TabularEmbedder, stack_num
from .heads import HEAD_KINDS, POOLINGS, DenseHead1D, PooledHead, pool_tokens
from .init_parts import InitParts, find_init_parts

__all__ = [
    "DenseHead1D", "Embedder1D", "Embedder2D", "HEAD_KINDS", "InitParts", "POOLINGS", "PooledHead",
    "TABULAR_LAYOUTS", "TabularEmbedder", "find_init_parts", "pool_tokens", "stack_num",
]
