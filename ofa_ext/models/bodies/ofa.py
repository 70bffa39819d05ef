"""The OFA encoder of this project as a body; and OFA's PETL site table (shared with the full model).

Text goes through OFA's token embedding, images through its ResNet patch embedding; both as the
encoder does it (``OFAEncoder.embed_inputs``). Positions are not part of OFA's embeddings: they
enter every layer as attention biases, computed from the token layout. A sequence from an outside
embedder (``layout=None``) is treated as a text sequence (positions 0 … T-1, text relative bias);
``embed`` of images returns an :class:`OFALayout` so that patches get OFA's image biases.

    body = OFABody(model.encoder)          # model: our OFAModel, e.g. from an official checkpoint
    hidden = body(*body.embed(tokens))     # == model.encoder(tokens)["encoder_out"][0].transpose(0, 1)
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from .base import Body, BodyInput, SiteTable, mean_pool

_LAYER = r"(encoder|decoder)\.layers\.\d+"
_ATTN = _LAYER + r"\.(self_attn|encoder_attn)"

#: encoder modules used only for images: outside the path of a text-only body (``OFABody(images=False)``)
IMAGE_PATH = ("embed_images", "image_proj", "patch_layernorm_embedding", "embed_image_positions", "image_pos_ln",
              "image_rel_pos_table_list")
#: OFA's module names (full match), for the encoder-decoder and for the encoder body alike (the body
#: keeps the encoder at ``encoder``). Unchanged from ``petl/inject.py`` before bodies existed.
OFA_SITES = SiteTable(
    name="ofa",
    sites={
        "q_proj": _ATTN + r"\.q_proj",
        "k_proj": _ATTN + r"\.k_proj",
        "v_proj": _ATTN + r"\.v_proj",
        "out_proj": _ATTN + r"\.out_proj",
        "fc1": _LAYER + r"\.fc1",
        "fc2": _LAYER + r"\.fc2",
        "post_attn": _LAYER + r"\.post_attn",
        "post_ffn": _LAYER + r"\.post_ffn",
        "encoder_self_attn": r"encoder\.layers\.\d+\.self_attn",
        "decoder_self_attn": r"decoder\.layers\.\d+\.self_attn",
    },
    # π-Tuning's released rule (specs/pi_tuning.md §3.4): names containing "bias" and "layer_norm" or "fc"
    bitfit={"pi_tuning": r"(?=.*bias)(?=.*(layer_norm|fc)).*", "all": r"(.*\.)?bias"},
    # image-code modules never in the forward pass ofa_ext runs (DDP: no unused trainable parameter)
    never_train=r"decoder\.(image_pos_ln|code_layernorm_embedding)\..*",
    head=r"(.*\.)?(embed_tokens|output_projection)\.[^.]+",
    # used only by OFABody.embed: the text embedding and the whole image path
    embedding=rf"encoder\.(embed_tokens|layernorm_embedding|type_embedding|{'|'.join(IMAGE_PATH)})\..*",
)


OFA_TEXT_SITES = dataclasses.replace(
    OFA_SITES, name="ofa_text",
    never_train=rf"({OFA_SITES.never_train}|encoder\.({'|'.join(IMAGE_PATH)})\..*)",
)


@dataclass
class OFALayout:
    """The first ``image_ids.shape[0]`` tokens are image patches with these position ids; the rest text."""

    image_ids: Tensor  # [N], the same for every sample


class OFABody(Body):
    """OFA's encoder from embeddings on; ``encoder`` is an ``OFAEncoder`` (weights shared, not copied).

    ``images=False``: a body for text or an outside embedder; the image path (ResNet, image
    projection and positions) is frozen and never opted in, so no trainable parameter sits
    outside the forward pass (DDP).
    """

    kind = "ofa_encoder"

    def __init__(self, encoder: nn.Module, images: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.images = images
        self.sites = OFA_SITES if images else OFA_TEXT_SITES
        if not images:
            for name in IMAGE_PATH:
                getattr(encoder, name).requires_grad_(False)
        self.width = encoder.embed_tokens.embedding_dim
        self.out_width = self.width
        self.max_text_length = encoder.max_source_positions
        self.max_length = encoder.max_source_positions + encoder.image_bucket_size**2
        self.modality = "text"  # native inputs: token ids, and images through embed()

    def embed(self, inputs: Tensor, padding_mask: Optional[Tensor] = None) -> BodyInput:
        """Token ids [B, L] (long) or images [B, 3, H, W] (float)."""
        if inputs.dtype in (torch.long, torch.int):
            return self.embed_pair(inputs.long(), None)
        if inputs.dim() == 4:
            return self.embed_pair(None, inputs)
        raise ValueError(f"{self.kind}.embed: token ids [B, L] or images [B, 3, H, W] expected, "
                         f"got {inputs.dtype} {tuple(inputs.shape)}")

    def embed_pair(self, tokens: Optional[Tensor], images: Optional[Tensor],
                   patch_masks: Optional[Tensor] = None) -> BodyInput:
        """OFA's multimodal input: image patches then text, as the encoder lays them out."""
        if images is not None and not self.images:
            raise ValueError(f"{self.kind}: this body was built without its image path (images=False)")
        x, padding_mask, image_ids = self.encoder.embed_inputs(tokens, images, patch_masks)
        return BodyInput(x, padding_mask, None if image_ids is None else OFALayout(image_ids))

    def encode(self, embeds: Tensor, padding_mask: Optional[Tensor], layout: Any, prompt_length: int) -> Tensor:
        bsz, seq_len = embeds.shape[:2]
        image_ids = None
        if layout is not None:
            if not isinstance(layout, OFALayout):
                raise TypeError(f"{self.kind}: layout must be an OFALayout or None, got {type(layout).__name__}")
            image_ids = layout.image_ids
        num_text = seq_len - prompt_length - (0 if image_ids is None else image_ids.shape[0])
        if num_text > self.max_text_length:
            raise ValueError(f"{self.kind}: {num_text} text positions exceed max_source_positions={self.max_text_length}")
        if padding_mask is None:
            padding_mask = torch.zeros(bsz, seq_len, dtype=torch.bool, device=embeds.device)
        pos = self.encoder.position_embeddings(num_text, image_ids)
        x, _ = self.encoder.forward_embeddings(embeds, padding_mask, pos, image_ids, prefix_length=prompt_length)
        return x.transpose(0, 1)  # [B, T, C]

    def pool(self, hidden: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """The mean over non-pad positions: OFA has no summary token (an image-only input has no bos),
        so text-only and image-only inputs are summarised the same way."""
        return mean_pool(hidden, padding_mask)

    def signature(self) -> Dict[str, Any]:
        layers = self.encoder.layers
        return {
            "encoder_layers": len(layers),
            "encoder_embed_dim": self.width,
            "encoder_ffn_dim": layers[0].fc1.out_features if len(layers) else 0,
            "encoder_heads": layers[0].self_attn.num_heads if len(layers) else 0,
            "vocab": self.encoder.embed_tokens.num_embeddings,
        }
