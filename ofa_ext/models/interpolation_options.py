"""The fairseq side of expert interpolation: option checks against the expert files, and the
learned weights in a form people read (log lines, metrics, the flags that rebuild an expert)."""

import logging
import os
from typing import Any

from .interpolation import MIX_ATTR
from .ofa.config import read_attr
from .petl.config import PETLConfig

logger = logging.getLogger(__name__)

MIX_KEY = f"{MIX_ATTR}.logits"


def expert_paths(cfg: Any) -> list:
    return [p.strip() for p in (read_attr(cfg, "interpolation_experts") or "").split(",") if p.strip()]


def mean_mix_weights(model) -> list:
    """Interpolation weights per expert, averaged over groups (one value per expert)."""
    from .interpolation import current_weights

    w = current_weights(model)
    return (w if w.dim() == 1 else w.mean(0)).tolist()


def log_mix_weights(model, when: str) -> None:
    from .interpolation import current_mix

    mix = current_mix(model)
    logger.info("expert interpolation weights %s: %s (experts %s)", when,
                [round(w, 4) for w in mean_mix_weights(model)], mix.names or mix.experts)


def petl_flags(cfg: PETLConfig) -> str:
    """The command-line options that rebuild ``cfg``'s PETL pieces as they were trained: the
    non-default structural fields and the options that shape the forward pass (dropouts)."""
    from .petl.config import FORWARD_FIELDS, STRUCTURAL_FIELDS

    default = PETLConfig()
    flags = []
    for f in STRUCTURAL_FIELDS + FORWARD_FIELDS:
        v = getattr(cfg, f)
        if v != getattr(default, f) or (isinstance(v, bool) and v):
            opt = "--" + f.replace("_", "-")
            flags.append(opt if v is True else f"{opt} {v}" if v is not False else "")
    return " ".join(x for x in flags if x)


def check_interpolation_options(cfg: Any, experts: list) -> None:
    """Interpolation needs the experts' PETL options on the command line: they are saved in the
    checkpoint's config, which is what lets an interpolation checkpoint reload without the files."""
    from .petl import active_methods
    from .petl.config import STRUCTURAL_FIELDS, as_petl_config

    if cfg.petl_load:
        raise ValueError("--petl-load and --interpolation-experts exclude each other: list the piece file "
                         "among the experts instead")
    if not all(os.path.isfile(p) for p in experts):
        return  # rebuilding a saved interpolation model: its config holds the options
    from .interpolation import load_experts

    _, metas = load_experts(experts)  # the experts agree with each other (methods, sizes, backbone)
    stored, path = metas[0]["petl_config"], experts[0]
    model_cfg = as_petl_config(cfg)
    if not active_methods(model_cfg):
        raise ValueError(f"--interpolation-experts needs the experts' PETL options on the command line (they "
                         f"are saved in the checkpoint so that it reloads without the expert files); the experts "
                         f"were trained with: {petl_flags(stored)}")
    diff = [f"{f}: experts {getattr(stored, f)!r} vs command line {getattr(model_cfg, f)!r}"
            for f in STRUCTURAL_FIELDS if getattr(stored, f) != getattr(model_cfg, f)]
    if diff:
        raise ValueError(f"the experts ({path}, ... methods {metas[0]['methods']}) were trained with other PETL "
                         f"options than this run ({active_methods(model_cfg)}): " + "; ".join(diff)
                         + f". Use the experts' options: {petl_flags(stored)}")
