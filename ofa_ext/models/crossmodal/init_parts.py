"""The pieces of a body's input embedding that ORCA copies into a new embedder (`specs/orca.md` §3).

Found by module name inside the body, so any body works without knowing our embedders:

| piece | names (first match) | bodies |
|---|---|---|
| embedding LayerNorm | ``embeddings.LayerNorm``, ``embeddings.norm``, ``layernorm_embedding`` | BERT/RoBERTa/MiniLM, Swin, OFA |
| position table (P, d) | ``embeddings.position_embeddings``, ``embeddings.position_embedding`` (``nn.Embedding``) | BERT family, CLIP |
| patch kernel | ``patch_embeddings.projection``, ``embeddings.patch_embedding`` (``nn.Conv2d``) | ViT/Swin, CLIP vision |

The first position id is the body's own: RoBERTa-style embeddings (with a ``padding_idx``) start
at ``padding_idx + 1`` (ORCA's ids 2, 3, …), BERT-style ones at 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn

LAYERNORM_NAMES = (r"(.*\.)?embeddings\.LayerNorm", r"(.*\.)?embeddings\.norm", r"(.*\.)?layernorm_embedding")
POSITION_NAMES = (r"(.*\.)?embeddings\.position_embeddings", r"(.*\.)?embeddings\.position_embedding")
PATCH_NAMES = (r"(.*\.)?patch_embeddings\.projection", r"(.*\.)?embeddings\.patch_embedding")


@dataclass
class InitParts:
    layernorm: Optional[nn.LayerNorm] = None
    positions: Optional[Tensor] = None  # (P, d)
    position_offset: int = 0
    patch_conv: Optional[nn.Conv2d] = None

    def describe(self) -> dict:
        return {"layernorm": self.layernorm is not None,
                "positions": None if self.positions is None else list(self.positions.shape),
                "position_offset": self.position_offset, "patch_conv": self.patch_conv is not None}


def _find(body: nn.Module, patterns, kind: type):
    modules = list(body.named_modules())
    for pattern in patterns:
        for name, module in modules:
            if isinstance(module, kind) and re.fullmatch(pattern, name):
                return name, module
    return None, None


def find_init_parts(body: nn.Module) -> InitParts:
    """What of ``body``'s input embedding an embedder can copy (missing pieces are ``None``)."""
    _, norm = _find(body, LAYERNORM_NAMES, nn.LayerNorm)
    pos_name, pos = _find(body, POSITION_NAMES, nn.Embedding)
    offset = 0
    if pos is not None:
        parent = body.get_submodule(pos_name.rpartition(".")[0]) if "." in pos_name else body
        padding_idx = getattr(parent, "padding_idx", None)
        offset = int(padding_idx) + 1 if padding_idx is not None else 0
    _, conv = _find(body, PATCH_NAMES, nn.Conv2d)
    return InitParts(norm, None if pos is None else pos.weight.detach(), offset, conv)
