"""OFAModel: the encoder-decoder, its state-dict upgrades and a checkpoint-aware `load_state_dict`.

Build with `OFAModel.build_from_config(cfg, dictionary)`; `cfg` is an `OFABackboneConfig` (or any
object carrying its fields, see `config.py`). fairseq registration lives in `../registered.py`.
"""

import logging
from typing import Any, Dict, Optional, Tuple

import torch
from fairseq.models import FairseqEncoderDecoderModel
from torch import Tensor, nn

from .decoder import OFADecoder
from .encoder import OFAEncoder
from .mismatch import mismatch_report

logger = logging.getLogger(__name__)

TIED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")
# buffers that are pure functions of the config: filled from the model when a file lacks them
RECOMPUTABLE_SUFFIXES = ("version", "token_rp_bucket", "image_rp_bucket", "image_position_idx", "num_batches_tracked")
LEGACY_LN = {
    "encoder": {"0": "self_attn_layer_norm", "1": "final_layer_norm"},
    "decoder": {"0": "self_attn_layer_norm", "1": "encoder_attn_layer_norm", "2": "final_layer_norm"},
}


def init_bert_params(module: nn.Module) -> None:
    """OFA's global re-init: Linear N(0, 0.02) with zero bias, Embedding N(0, 0.02) with zero pad row."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class OFAModel(FairseqEncoderDecoderModel):
    """OFA encoder-decoder; state-dict keys equal the official checkpoints'.

    `optional_state_keys`: keys that may be absent from a loaded state dict (filled from the current
    model); extensions such as PETL add their parameter names here.
    """

    def __init__(self, cfg: Any, encoder: OFAEncoder, decoder: OFADecoder) -> None:
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.optional_state_keys: set[str] = set()

    @classmethod
    def build_from_config(cls, cfg: Any, dictionary) -> "OFAModel":
        """Build (and initialise as OFA does) a backbone for `dictionary` (shared by src and tgt)."""
        if cfg.encoder_layerdrop or cfg.decoder_layerdrop:
            raise ValueError("encoder/decoder LayerDrop is not supported by ofa_ext (set it to 0)")
        if cfg.sync_bn:
            raise ValueError("--sync-bn is not supported by ofa_ext")
        if cfg.activation_fn != "gelu":
            raise ValueError(f"--activation-fn {cfg.activation_fn!r}: OFA uses gelu only")
        if not (cfg.encoder_normalize_before and cfg.decoder_normalize_before):
            raise ValueError("post-LN layers are not implemented: OFA always uses --*-normalize-before")
        if not cfg.share_all_embeddings and cfg.encoder_embed_dim != cfg.decoder_embed_dim:
            raise ValueError("encoder and decoder embed dims differ; OFA shares one token embedding")
        embed = nn.Embedding(len(dictionary), cfg.encoder_embed_dim, padding_idx=dictionary.pad())
        dec_embed = embed if cfg.share_all_embeddings else nn.Embedding(
            len(dictionary), cfg.decoder_embed_dim, padding_idx=dictionary.pad()
        )
        model = cls(cfg, OFAEncoder(cfg, dictionary, embed), OFADecoder(cfg, dictionary, dec_embed))
        model.apply(init_bert_params)
        return model  # the freeze_* options are applied with PETL's freezing (ofa_ext.models.petl.freeze)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and getattr(self.cfg, "freeze_resnet", False):
            for m in self.encoder.embed_images.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()  # frozen trunk: running statistics stay put
        return self

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor],
        prev_output_tokens: Tensor,
        patch_images: Optional[Tensor] = None,
        patch_masks: Optional[Tensor] = None,
        features_only: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
        return_all_hiddens: bool = False,
        **unused,
    ) -> Tuple[Tensor, Dict[str, Any]]:
        """→ (logits [B, T, V] or features [B, T, C], {"attn": [B×T×S], "inner_states": [...]})."""
        encoder_out = self.encoder(
            src_tokens, src_lengths=src_lengths, patch_images=patch_images, patch_masks=patch_masks,
            return_all_hiddens=return_all_hiddens,
        )
        return self.decoder(
            prev_output_tokens, encoder_out=encoder_out, features_only=features_only,
            alignment_layer=alignment_layer, alignment_heads=alignment_heads,
        )

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())

    # -- checkpoint compatibility -------------------------------------------------------------
    def upgrade_state_dict_named(self, state_dict: Dict[str, Tensor], name: str) -> None:
        """Bring an official/legacy OFA state dict to this model's layout, in place (ofa.md §10)."""
        prefix = f"{name}." if name else ""
        self._upgrade_legacy_names(state_dict, prefix)
        own = self.state_dict()
        # tied embedding written once (or as the legacy `embed_out`)
        legacy_out = f"{prefix}decoder.embed_out"
        if legacy_out in state_dict:
            state_dict.setdefault(f"{prefix}decoder.output_projection.weight", state_dict.pop(legacy_out))
        if self.cfg.share_all_embeddings or self.cfg.share_decoder_input_output_embed:
            src = next((prefix + k for k in TIED_KEYS if prefix + k in state_dict), None)
            if src is not None:
                for k in TIED_KEYS:
                    if k in own and prefix + k not in state_dict:
                        state_dict[prefix + k] = state_dict[src]
        self._resize_rows(state_dict, prefix, own)
        # OFA's loader always takes this buffer from the freshly built model
        key = f"{prefix}decoder.image_position_idx"
        if key in own:
            state_dict[key] = own["decoder.image_position_idx"].clone()

    @staticmethod
    def _upgrade_legacy_names(state_dict: Dict[str, Tensor], prefix: str) -> None:
        for k in list(state_dict):
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix):]
            parts = rest.split(".")
            # layers.{l}.layer_norms.{i}.{w,b} -> named layer norms
            if len(parts) == 6 and parts[1] == "layers" and parts[3] == "layer_norms" and parts[0] in LEGACY_LN:
                new = LEGACY_LN[parts[0]].get(parts[4])
                if new is not None:
                    state_dict[prefix + ".".join(parts[:3] + [new, parts[5]])] = state_dict.pop(k)
            # fused in_proj_{weight,bias} -> q/k/v
            elif parts[-1] in ("in_proj_weight", "in_proj_bias"):
                t = state_dict.pop(k)
                leaf = "weight" if parts[-1] == "in_proj_weight" else "bias"
                base = prefix + ".".join(parts[:-1])
                for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                    state_dict[f"{base}.{proj}.{leaf}"] = chunk.clone()

    def _resize_rows(self, state_dict: Dict[str, Tensor], prefix: str, own: Dict[str, Tensor]) -> None:
        """Dictionary-size and image-position row count adjustments of OFA's loader."""
        dictionary = self.encoder.dictionary
        for k in TIED_KEYS + ("encoder.embed_image_positions.weight", "decoder.embed_image_positions.weight"):
            if prefix + k not in state_dict or k not in own:
                continue
            t, target = state_dict[prefix + k], own[k]
            if t.dim() != 2 or t.shape[1] != target.shape[1] or t.shape[0] == target.shape[0]:
                continue
            n, want = t.shape[0], target.shape[0]
            is_token = k in TIED_KEYS
            if is_token and n == want + 1 and "<mask>" not in getattr(dictionary, "indices", {"<mask>": 0}):
                state_dict[prefix + k] = t[:want]  # OFA drops the <mask> row for a mask-less dictionary
            elif n < want:
                extra = torch.randn(want - n, t.shape[1], dtype=t.dtype) * t.shape[1] ** -0.5
                state_dict[prefix + k] = torch.cat([t, extra.to(t.device)], dim=0)
                logger.warning("%s%s: %d rows in the checkpoint, %d in the model; new rows drawn N(0, C^-0.5)",
                               prefix, k, n, want)

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg=None, args=None):
        """fairseq's signature. Upgrades the dict, fills `optional_state_keys` and recomputable
        buffers from the model, then raises one `CheckpointMismatchError` listing every problem."""
        state_dict = dict(state_dict)
        self.upgrade_state_dict_named(state_dict, "")
        original = dict(state_dict)
        own = self.state_dict()
        for k, v in own.items():
            if k not in state_dict and (k in self.optional_state_keys or self._recomputable(k, state_dict)):
                state_dict[k] = v
        err = mismatch_report(own, state_dict, strict=strict, model_desc=self._describe(), original=original)
        if err is not None:
            raise err
        return nn.Module.load_state_dict(self, state_dict, strict=strict)

    @staticmethod
    def _recomputable(key: str, state_dict: Dict[str, Tensor]) -> bool:
        """Config-derived buffers; a BatchNorm counter only where the file has that BatchNorm."""
        module, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        if leaf == "num_batches_tracked":
            return f"{module}.running_mean" in state_dict
        return leaf in RECOMPUTABLE_SUFFIXES

    def _describe(self) -> str:
        c = self.cfg
        return (f"arch {getattr(c, '_name', None) or '?'}: C={c.encoder_embed_dim}, "
                f"{c.encoder_layers}+{c.decoder_layers} layers, {c.resnet_type}, scale_attn={c.scale_attn}, "
                f"scale_fc={c.scale_fc}, scale_heads={c.scale_heads}")
