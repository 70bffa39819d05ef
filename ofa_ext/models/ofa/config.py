"""Backbone options of OFA as a fairseq dataclass; field names equal OFA's argument names.

Defaults are OFA's `ofa_large` arch values (specs/ofa.md §2.2). The four run-script flags
(`scale_attn`, `scale_fc`, `scale_heads`, `disable_entangle`) default to False here because fairseq
turns a True bool default into a `store_false` switch; the arch functions set them to True unless
`--bare-arch-defaults` is given (see registered.py). A stored checkpoint config that lacks a key
gets these dataclass defaults, which is what an old file was trained with.
"""

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from .resnet import TRUNK_LAYOUTS


def _f(default: Any, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class OFABackboneConfig(FairseqDataclass):
    # sizes
    encoder_embed_dim: int = _f(1024, "encoder embedding dimension C")
    encoder_ffn_embed_dim: int = _f(4096, "encoder FFN hidden size F")
    encoder_layers: int = _f(12, "number of encoder layers")
    encoder_attention_heads: int = _f(16, "number of encoder attention heads")
    decoder_embed_dim: Optional[int] = _f(None, "decoder embedding dimension (default: the encoder's)")
    decoder_ffn_embed_dim: Optional[int] = _f(None, "decoder FFN hidden size (default: the encoder's)")
    decoder_layers: int = _f(12, "number of decoder layers")
    decoder_attention_heads: Optional[int] = _f(None, "decoder attention heads (default: the encoder's)")
    decoder_output_dim: Optional[int] = _f(None, "decoder output dimension (must equal decoder_embed_dim)")
    decoder_input_dim: Optional[int] = _f(None, "decoder input dimension (must equal decoder_embed_dim)")
    resnet_type: str = _f("resnet152", "visual trunk: resnet_nano, resnet18, resnet34, resnet50, resnet101, resnet152")
    # structure switches (OFA's shared arch values)
    encoder_normalize_before: bool = _f(True, "pre-LN encoder layers")
    decoder_normalize_before: bool = _f(True, "pre-LN decoder layers")
    encoder_learned_pos: bool = _f(True, "learned encoder positions (always on in OFA)")
    decoder_learned_pos: bool = _f(True, "learned decoder positions (always on in OFA)")
    share_decoder_input_output_embed: bool = _f(True, "tie the output projection to the decoder embedding")
    share_all_embeddings: bool = _f(True, "one token embedding for encoder, decoder and output")
    no_scale_embedding: bool = _f(True, "do not multiply embeddings by sqrt(C)")
    layernorm_embedding: bool = _f(True, "LayerNorm after the token embedding")
    patch_layernorm_embedding: bool = _f(True, "LayerNorm after the image patch embedding")
    code_layernorm_embedding: bool = _f(True, "LayerNorm after image-code embeddings (decoder)")
    add_type_embedding: bool = _f(True, "add a text/image type embedding in the encoder")
    entangle_position_embedding: bool = _f(False, "add absolute positions to encoder inputs (never in releases)")
    disable_entangle: bool = _f(False, "do not add absolute positions to decoder inputs (run scripts: on)")
    scale_attn: bool = _f(False, "LayerNorm after attention: attn_ln / self_attn_ln / cross_attn_ln (run scripts: on)")
    scale_fc: bool = _f(False, "LayerNorm inside the FFN: ffn_layernorm (run scripts: on)")
    scale_heads: bool = _f(False, "learned per-head output scale c_attn (run scripts: on)")
    scale_resids: bool = _f(False, "learned residual scale w_resid on the FFN block")
    bare_arch_defaults: bool = _f(
        False, "arch functions keep OFA's bare defaults (scale_* and disable_entangle off) instead of the run-script flags"
    )
    # regularisation
    dropout: float = _f(0.0, "dropout after embeddings, attention and FFN (run scripts: 0.1)")
    attention_dropout: float = _f(0.0, "dropout on attention probabilities")
    activation_dropout: float = _f(0.0, "dropout after the FFN activation")
    relu_dropout: float = _f(0.0, "legacy name of activation_dropout")
    activation_fn: str = _f("gelu", "FFN activation (OFA: gelu, computed in fp32)")
    resnet_drop_path_rate: float = _f(0.0, "drop-path rate inside the ResNet trunk")
    resnet_layout: ChoiceEnum(TRUNK_LAYOUTS) = _f(
        "contiguous", "activation layout of the ResNet trunk: contiguous (torch's default, as OFA), channels_last "
        "(a trunk step 12 to 16 percent faster on the CPU, float sums in another order), auto (channels_last on the CPU)")
    encoder_drop_path_rate: float = _f(0.0, "max drop-path rate of encoder layers (linear over depth)")
    decoder_drop_path_rate: float = _f(0.0, "max drop-path rate of decoder layers (linear over depth)")
    encoder_layerdrop: float = _f(0.0, "LayerDrop for encoder layers (unsupported; must be 0)")
    decoder_layerdrop: float = _f(0.0, "LayerDrop for decoder layers (unsupported; must be 0)")
    # positions
    max_source_positions: int = _f(1024, "max encoder text length")
    max_target_positions: int = _f(1024, "max decoder length")
    token_bucket_size: int = _f(256, "text relative-position buckets per direction")
    image_bucket_size: int = _f(42, "image grid side of the position tables (max patches per side)")
    attn_scale_factor: float = _f(2.0, "attention scale is (head_dim * factor)^-0.5")
    code_image_size: int = _f(128, "image-code generation size (sets decoder.image_position_idx)")
    # freezing and BN
    freeze_resnet: bool = _f(False, "eval-mode BatchNorm and frozen trunk weights")
    freeze_encoder_embedding: bool = _f(False, "freeze the encoder token embedding")
    freeze_decoder_embedding: bool = _f(False, "freeze the decoder token embedding")
    sync_bn: bool = _f(False, "SyncBatchNorm in the trunk (not supported here; must be False)")


BACKBONE_FIELDS = frozenset(f.name for f in fields(OFABackboneConfig) if not f.name.startswith("_"))


def read_attr(cfg: Any, name: str, default: Any = None) -> Any:
    """Read `name` from a Namespace, dataclass, DictConfig or plain mapping."""
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    try:
        return getattr(cfg, name, default)
    except Exception:  # omegaconf raises on missing keys in struct mode
        return default
