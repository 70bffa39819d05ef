"""fairseq registration of model `ofa` and its archs (idempotent).

    fairseq-train DATA --user-dir ofa_ext --task refcoco --arch ofa_base ...

* `OFAConfig` = the backbone options (`ofa/config.py`, OFA's argument names) + `PETLConfig` +
  `InterpolationConfig` (π-Tuning step 3, `--interpolation-experts a.safetensors,b.safetensors`).
* Arch functions fill only attributes the user did not set (OFA style): the size table of
  `ofa/archs.py`, decoder sizes copied from the encoder, and the run-script flags (`scale_attn`,
  `scale_fc`, `scale_heads`, `disable_entangle`) unless `--bare-arch-defaults`. So `--arch ofa_base`
  alone builds the official ofa_base key set. `--arch ofa` (fairseq's automatic arch of a dataclass
  model) uses the dataclass defaults as they are: ofa_large sizes, bare flags.
* `build_model` builds the backbone for `task.source_dictionary`, then applies PETL, then (with
  `--interpolation-experts`) turns every piece into a learned mix of the experts (`interpolation.py`).

Interpolation checkpoints reload without the expert files: the PETL options are saved in the
checkpoint's config and the state dict holds the stacked experts and the logits, so when an expert
file is missing the mix is rebuilt from the model's own pieces (`structure_only`) and the loaded
state dict fills it. Loading a state dict without the mix into such a model is an error naming the
missing files. The interpolation weights are logged at build, after a load, and as the training
metrics `mix_w0..mix_w{K-1}` (mean over groups) at every update.
"""

import os

import torch
import logging
from dataclasses import dataclass
from typing import Any, Callable

from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY, register_model, register_model_architecture

from .ofa.archs import ARCH_ALIASES, ARCH_SIZES, DECODER_FOLLOWS_ENCODER, SCRIPT_FLAGS
from .ofa.config import OFABackboneConfig, read_attr
from .ofa.model import OFAModel
from .interpolation import MIX_ATTR, InterpolationConfig, adopt_checkpoint_mixing
from .interpolation_options import (
    MIX_KEY, check_interpolation_options, expert_paths, log_mix_weights, mean_mix_weights,
)
from .petl import apply_petl
from .petl.config import PETLConfig

logger = logging.getLogger(__name__)

@dataclass
class OFAConfig(OFABackboneConfig, PETLConfig, InterpolationConfig):
    """Every option of model `ofa`: OFA's backbone arguments, the PETL and the interpolation options."""


def _missing(args: Any, name: str) -> bool:
    if isinstance(args, dict):
        return name not in args
    try:
        return not hasattr(args, name) or getattr(args, name) is None
    except Exception:
        return True


def _set(args: Any, name: str, value: Any) -> None:
    if isinstance(args, dict):
        args[name] = value
    else:
        setattr(args, name, value)


def fill_arch_defaults(args: Any, arch: str, script_flags: bool = True) -> Any:
    """Set the sizes (and run-script flags) of `arch` on `args` where they are unset; returns args."""
    arch = ARCH_ALIASES.get(arch, arch)
    for k, v in ARCH_SIZES.get(arch, {}).items():
        if _missing(args, k):
            _set(args, k, v)
    for dk, ek in DECODER_FOLLOWS_ENCODER.items():
        if _missing(args, dk) and not _missing(args, ek):
            _set(args, dk, read_attr(args, ek))
    for k in ("decoder_output_dim", "decoder_input_dim"):
        if _missing(args, k) and not _missing(args, "decoder_embed_dim"):
            _set(args, k, read_attr(args, "decoder_embed_dim"))
    if script_flags and not read_attr(args, "bare_arch_defaults", False):
        for k, v in SCRIPT_FLAGS.items():
            if _missing(args, k):
                _set(args, k, v)
    return args


def to_ofa_config(cfg: Any, script_flags: bool = False) -> OFAConfig:
    """An `OFAConfig` from a Namespace, dict, DictConfig or dataclass (stored configs included).

    Keys the source lacks get the arch's sizes and otherwise the dataclass defaults (what an old
    file was trained with); unknown keys are ignored.
    """
    if isinstance(cfg, OFAConfig):
        return cfg
    arch = read_attr(cfg, "_name") or read_attr(cfg, "arch") or "ofa"
    arch = ARCH_ALIASES.get(arch, arch)
    values = {k: read_attr(cfg, k) for k in OFAConfig.__dataclass_fields__ if not k.startswith("_")}
    values = {k: v for k, v in values.items() if v is not None}
    fill_arch_defaults(values, arch, script_flags=script_flags)
    out = OFAConfig()
    for k, v in values.items():
        setattr(out, k, v)
    out._name = arch
    return out


# Buffer present in the checkpoints of runs started from `--petl-load` pieces.
PIECES_MARKER = "petl_pieces_trained"


class OFAFairseqModel(OFAModel):
    """Model `ofa` as fairseq sees it: backbone from the task dictionary, then PETL."""

    @classmethod
    def build_model(cls, cfg: Any, task) -> OFAModel:
        arch = read_attr(cfg, "_name") or read_attr(cfg, "arch")
        if read_attr(cfg, "arch") in ARCH_ALIASES and arch == read_attr(cfg, "arch"):
            logger.info("arch %s is an alias of %s", arch, ARCH_ALIASES[arch])
        ofa_cfg = to_ofa_config(cfg)
        src, tgt = task.source_dictionary, task.target_dictionary
        if tgt is not None and src is not tgt and len(src) != len(tgt):
            raise ValueError("OFA shares one dictionary between source and target; the task gave two different ones")
        model = cls.build_from_config(ofa_cfg, src)
        experts = expert_paths(ofa_cfg)
        if experts:
            check_interpolation_options(ofa_cfg, experts)
        model = apply_petl(model, ofa_cfg)
        if ofa_cfg.petl_load:
            model.pin_pieces(ofa_cfg.petl_load)
        if experts:
            model.interpolate(ofa_cfg, experts)
        return model

    def interpolate(self, cfg: OFAConfig, experts: list) -> None:
        """Mix the experts' pieces (π-Tuning step 3); rebuild the structure only when files are gone."""
        from .interpolation import apply_interpolation

        absent = [p for p in experts if not os.path.isfile(p)]
        if absent:
            logger.info("interpolation expert files not found (%s): rebuilding the mix from the model's "
                        "pieces; the loaded checkpoint must supply the experts and weights", absent)
        apply_interpolation(self, cfg, structure_only=bool(absent))
        self.absent_experts = absent

    def pin_pieces(self, path: str) -> None:
        """Keep `--petl-load` pieces over the values of a backbone checkpoint loaded later.

        fairseq loads `--restore-file` / `--finetune-from-model` after building the model, which
        would overwrite pieces that live in backbone tensors (BitFit biases). The marker buffer tells
        this run's own checkpoints (whose pieces are trained values, e.g. on resume) from backbones.
        """
        from .petl import read_piece_file

        self.pinned_pieces = read_piece_file(path)[0]
        self.register_buffer(PIECES_MARKER, torch.ones(1))
        self.optional_state_keys.add(PIECES_MARKER)

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg=None, args=None):
        pinned = getattr(self, "pinned_pieces", None)
        if pinned and PIECES_MARKER not in state_dict:
            state_dict = {**state_dict, **pinned}
        mix = getattr(self, MIX_ATTR, None)
        if mix is not None:
            state_dict = adopt_checkpoint_mixing(self, self._route_plain_pieces(state_dict))
            if MIX_KEY not in state_dict and getattr(self, "absent_experts", None):
                raise FileNotFoundError(
                    f"expert piece files not found: {self.absent_experts}. Without them the interpolation can "
                    "only be restored from one of its own checkpoints, and this state dict holds no mix "
                    f"({MIX_KEY}); fix --interpolation-experts")
        out = super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        if mix is not None and MIX_KEY in state_dict:
            log_mix_weights(self, "after loading a checkpoint")
        return out

    def _route_plain_pieces(self, state_dict):
        """A plain checkpoint's value of an interpolated tensor (e.g. a BitFit bias of the backbone)
        goes to the unused ``parametrizations.<name>.original``, so the strict key check passes."""
        own = set(self.state_dict())
        routed = dict(state_dict)
        for k in state_dict:
            module, _, leaf = k.rpartition(".")
            target = f"{module}.parametrizations.{leaf}.original" if module else f"parametrizations.{leaf}.original"
            if k not in own and target in own:
                routed[target] = routed.pop(k)
        return routed

    def set_num_updates(self, num_updates):
        """fairseq calls this after every update: log the interpolation weights as metrics."""
        super().set_num_updates(num_updates)
        if getattr(self, MIX_ATTR, None) is not None:
            from fairseq import metrics

            for k, w in enumerate(mean_mix_weights(self)):
                metrics.log_scalar(f"mix_w{k}", w, weight=0, round=4)


def _make_arch_fn(arch: str) -> Callable[[Any], None]:
    def arch_fn(args: Any) -> None:
        fill_arch_defaults(args, arch)

    arch_fn.__name__ = f"{arch}_architecture"
    arch_fn.__doc__ = f"fairseq arch `{arch}`: OFA sizes + run-script flags where unset."
    return arch_fn


def register() -> None:
    """Register model `ofa` and the archs once; a second call (or second import) is a no-op."""
    if "ofa" not in MODEL_REGISTRY:
        register_model("ofa", dataclass=OFAConfig)(OFAFairseqModel)
    elif not issubclass(MODEL_REGISTRY["ofa"], OFAModel):
        logger.warning("a different model is already registered as 'ofa' (%s); ofa_ext archs not added",
                       MODEL_REGISTRY["ofa"])
        return
    for arch in list(ARCH_SIZES) + list(ARCH_ALIASES):
        if arch not in ARCH_MODEL_REGISTRY:
            register_model_architecture("ofa", arch)(_make_arch_fn(arch))


register()
