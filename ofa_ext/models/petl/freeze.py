"""Freezing, in one place: which parameters train under a PETL config and the backbone's freeze options.

Everything is frozen (``requires_grad=False``, so autograd skips it) except the pieces PETL
created, the opt-ins of the config (BitFit's biases, ``--train-layernorm``, ``--train-head``),
and ``keep_trainable`` (module-name prefixes that train alongside the pieces, e.g. a task's
embedder and head). Opt-ins are read from the site tables of ``sites.py``; an opt-in that
selects no parameter is an error, as an unmatched site is (BitFit on a body without matching
biases would otherwise train nothing). The backbone's own options (``--freeze-resnet``,
``--freeze-encoder-embedding``, ``--freeze-decoder-embedding``) are applied here too, last, so they
hold with and without PETL (the backbone only keeps a frozen trunk's BatchNorm in eval mode).
"""

from typing import Any, Dict, Iterable, List, Sequence, Set

from torch import nn

from .config import PETLConfig
from .sites import layer_norm_parameters, matching_parameters, never_trained


def opt_in_parameters(model: nn.Module, cfg: PETLConfig) -> Dict[str, Set[str]]:
    """{option: parameter names it opts in}, for the options switched on; never-trained ones removed."""
    never = never_trained(model)
    chosen: Dict[str, Set[str]] = {}
    if cfg.bitfit:
        chosen[f"--bitfit-scope={cfg.bitfit_scope}"] = set(matching_parameters(model, f"bitfit:{cfg.bitfit_scope}"))
    if cfg.train_layernorm:
        chosen["--train-layernorm"] = set(layer_norm_parameters(model))
    if cfg.train_head:
        chosen["--train-head"] = set(matching_parameters(model, "head"))
    for option, names in chosen.items():
        names -= never
        if not names:
            raise ValueError(f"{option}: selects no parameter of {type(model).__name__} "
                             "(nothing would train for it)")
    return chosen


def kept_parameters(model: nn.Module, keep_trainable: Sequence[str]) -> Set[str]:
    """Parameter names under the module prefixes ``keep_trainable``; an unknown prefix is an error."""
    names: Set[str] = set()
    all_names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    for prefix in keep_trainable:
        under = {n for n in all_names if n.startswith(prefix + ".")}
        if not under:
            raise ValueError(f"keep_trainable: no parameter under {prefix!r} in {type(model).__name__}")
        names |= under
    return names


def freeze_all_but(model: nn.Module, trainable: Iterable[str]) -> None:
    """``requires_grad`` True exactly for the parameters named in ``trainable`` (any of a tied tensor's names)."""
    keep = set(trainable)
    for _, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(False)
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in keep:
            p.requires_grad_(True)


def freeze_for_petl(model: nn.Module, cfg: PETLConfig, piece_names: Set[str],
                    keep_trainable: Sequence[str] = ()) -> Dict[str, int]:
    """Freeze all but pieces, opt-ins and ``keep_trainable``; → {option: number of tensors it opted in}."""
    opt_ins = opt_in_parameters(model, cfg)
    kept = kept_parameters(model, keep_trainable)
    freeze_all_but(model, set(piece_names).union(kept, *opt_ins.values()))
    return {option: len(names) for option, names in opt_ins.items()}



#: backbone option -> the module it freezes (OFA's names)
BACKBONE_FREEZES = {
    "freeze_resnet": "encoder.embed_images",
    "freeze_encoder_embedding": "encoder.embed_tokens",
    "freeze_decoder_embedding": "decoder.embed_tokens",
}


def freeze_backbone_parts(model: nn.Module, cfg: Any) -> List[str]:
    """Apply the backbone freeze options set in ``cfg`` (any config object); → the options applied."""
    applied = []
    for option, module in BACKBONE_FREEZES.items():
        if not getattr(cfg, option, False):
            continue
        try:
            part = model.get_submodule(module)
        except AttributeError:
            raise ValueError(f"--{option.replace('_', '-')}: {type(model).__name__} has no module {module!r}") from None
        part.requires_grad_(False)
        applied.append(option)
    return applied
