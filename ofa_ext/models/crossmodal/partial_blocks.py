"""The last ``k`` blocks of a Hugging Face body, split off for partial fine-tuning (Lin et al.).

Partial fine-tuning caches hidden states at the input of the last ``k`` blocks once
(:func:`hidden_before_last`) and trains only those blocks and what follows them: the final norm,
the pooling and the projection (CLIP ViT: last block(s) + ``post_layernorm`` + ``visual_projection``,
the released ``image_layer_idx = k``). :class:`PartialTower` is the body itself with its embedding
and its first ``N − k`` blocks removed, so its module names, and with them the PETL site tables
(LoRA / adapters / BitFit on those blocks), stay the body's own.

:class:`LayerStack` names, per body family, the block list, the module before the stack (CLIP
vision: ``pre_layrnorm``), the module after it (CLIP text: ``final_layer_norm``, ViT:
``layernorm``) and the attention mask its blocks take. Bodies whose blocks are not one list of
equal layers (Swin stages, OFA) are refused with one line.
"""

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from ..bodies.base import Body
from ..bodies.hf import BertFamilyBody, CLIPTextBody, CLIPVisionBody, ViTBody, _attention_mask, _masks


class LayerStack:
    """Where the blocks of ``body`` are: ``(parent, attribute)`` of their ModuleList and the ops around it."""

    def __init__(self, body: Body) -> None:
        m = getattr(body, "model", None)
        self.causal = isinstance(body, CLIPTextBody)
        if isinstance(body, (CLIPVisionBody, CLIPTextBody)):
            self.parent, self.attr = m.encoder, "layers"
        elif isinstance(body, BertFamilyBody):
            self.parent, self.attr = m.encoder, "layer"
        elif isinstance(body, ViTBody):
            self.parent, self.attr = m, "layers"
        else:
            raise ValueError(f"{body.kind}: partial fine-tuning needs a body with one stack of equal blocks "
                             "(CLIP towers, BERT-family, ViT)")
        self.body = body
        self.pre_name = "pre_layrnorm" if isinstance(body, CLIPVisionBody) else None
        self.post_name = {CLIPTextBody: "final_layer_norm", ViTBody: "layernorm"}.get(type(body))

    @property
    def layers(self) -> nn.ModuleList:
        return getattr(self.parent, self.attr)

    def __len__(self) -> int:
        return len(self.layers)

    def _module(self, name: Optional[str]) -> Callable[[Tensor], Tensor]:
        return (lambda h: h) if name is None else getattr(self.body.model, name)

    def mask(self, h: Tensor, padding_mask: Optional[Tensor]):
        """The attention mask the blocks take (as the body's own ``encode`` builds it)."""
        bidirectional, causal = _masks()
        cfg, am = self.body.config, _attention_mask(padding_mask)
        if self.causal:
            return causal(config=cfg, inputs_embeds=h, attention_mask=am, past_key_values=None)
        return bidirectional(config=cfg, inputs_embeds=h, attention_mask=am)

    def run(self, h: Tensor, padding_mask: Optional[Tensor], start: int, stop: int) -> Tensor:
        mask, extra = self.mask(h, padding_mask), ({"is_causal": True} if self.causal else {})
        for layer in list(self.layers)[start:stop]:
            h = layer(h, mask, **extra)
        return h

    def check_k(self, k: int, option: str = "--layer", where: str = "") -> None:
        if not 1 <= k <= len(self):
            raise ValueError(f"{option} {k}: {self.body.kind}{where} has {len(self)} blocks; partial fine-tuning "
                             f"caches at the input of the last k blocks, 1 <= k <= {len(self)} (0 = final features)")


@torch.no_grad()
def hidden_before_last(body: Body, inputs: Tensor, k: int,
                       padding_mask: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """(B, T, d) hidden states at the input of the last ``k`` blocks, and the padding mask."""
    stack = LayerStack(body)
    stack.check_k(k)
    inp = body.embed(inputs, padding_mask)
    h = stack._module(stack.pre_name)(inp.embeds)
    return stack.run(h, inp.padding_mask, 0, len(stack) - k), inp.padding_mask


class PartialTower(nn.Module):
    """The body's last ``k`` blocks + final norm + pooling + projection: cached hidden states → features."""

    def __init__(self, body: Body, k: int) -> None:
        super().__init__()
        stack = LayerStack(body)
        stack.check_k(k)
        setattr(stack.parent, stack.attr, nn.ModuleList(list(stack.layers)[len(stack) - k:]))
        body.model.embeddings = nn.Identity()  # off the path: cached states replace embedding + first blocks
        if stack.pre_name is not None:
            setattr(body.model, stack.pre_name, nn.Identity())
        self.body, self.k, self.stack = body, k, stack
        self.width = body.width

    def forward(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """(B, T, d) cached hidden states → (B, D) the body's pooled, projected features."""
        dtype = next(self.body.parameters()).dtype
        h = self.stack.run(hidden.to(dtype), padding_mask, 0, self.k)
        h = self.stack._module(self.stack.post_name)(h)
        return self.body.project(self.body.pool(h, padding_mask))
