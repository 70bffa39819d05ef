"""The OFA size table and the flag defaults every released run script uses (specs/ofa.md §2, §12).

Pure data: `registered.py` turns it into fairseq arch functions, the CLI and tests read it.
Decoder sizes default to the encoder's (as in OFA's arch functions).
"""

from typing import Any

# arch -> the attributes its OFA arch function sets (unset decoder values copy the encoder's)
ARCH_SIZES: dict[str, dict[str, Any]] = {
    "ofa_tiny": dict(
        encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_layers=4, encoder_attention_heads=4,
        decoder_layers=4, resnet_type="resnet50",
    ),
    "ofa_medium": dict(
        encoder_embed_dim=512, encoder_ffn_embed_dim=2048, encoder_layers=4, encoder_attention_heads=8,
        decoder_layers=4, resnet_type="resnet101",
    ),
    "ofa_base": dict(
        encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_layers=6, encoder_attention_heads=12,
        decoder_layers=6, resnet_type="resnet101",
    ),
    "ofa_large": dict(
        encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_layers=12, encoder_attention_heads=16,
        decoder_layers=12, resnet_type="resnet152",
    ),
    "ofa_huge": dict(
        encoder_embed_dim=1280, encoder_ffn_embed_dim=5120, encoder_layers=24, encoder_attention_heads=16,
        decoder_layers=12, resnet_type="resnet152",
    ),
    # ours: a test/demo size; forward+backward well under a second on a CPU at 64-128 px
    "ofa_nano": dict(
        encoder_embed_dim=64, encoder_ffn_embed_dim=256, encoder_layers=2, encoder_attention_heads=4,
        decoder_layers=2, resnet_type="resnet_nano", image_bucket_size=24,  # images up to 384 px
    ),
}

PUBLISHED_ARCHS = ("ofa_tiny", "ofa_medium", "ofa_base", "ofa_large", "ofa_huge")

# Old released checkpoints stored this arch name (OFA issue #77).
ARCH_ALIASES: dict[str, str] = {"m6_unify_large": "ofa_large"}

# Flags every released OFA / π-Tuning run script passes; our arch defaults (DESIGN.md).
# The bare OFA arch functions leave them False; `--bare-arch-defaults` restores that.
SCRIPT_FLAGS: dict[str, bool] = dict(scale_attn=True, scale_fc=True, scale_heads=True, disable_entangle=True)

# Sizes that follow the encoder's unless set.
DECODER_FOLLOWS_ENCODER = {
    "decoder_embed_dim": "encoder_embed_dim",
    "decoder_ffn_embed_dim": "encoder_ffn_embed_dim",
    "decoder_attention_heads": "encoder_attention_heads",
}

# Dictionary size of every released model: 4 specials + 50,260 BPE + <mask> + 8192 codes + 1000 bins.
OFA_DICT_SIZE = 59457


def canonical_arch(name: str) -> str:
    """Resolve aliases; raise a clear error for unknown names."""
    name = ARCH_ALIASES.get(name, name)
    if name not in ARCH_SIZES and name != "ofa":
        raise ValueError(f"unknown OFA arch {name!r}; expected one of {sorted(ARCH_SIZES) + sorted(ARCH_ALIASES)}")
    return name
