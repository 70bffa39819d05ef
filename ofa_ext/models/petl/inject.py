"""``apply_petl``: inject PETL pieces into an OFA model, freeze the rest, report what trains.

The backbone knows nothing of PETL. It offers generic hooks (see ``toy.py`` for the contract):
``nn.Linear`` projections, ``post_attn``/``post_ffn`` identity slots and a ``prefix_provider``
attribute on attention modules. Where PETL attaches is declared once, in :data:`SITES`; a site
that matches no module is an error (a typo never passes silently), and the wrapper for a
matched module is chosen by its type (:data:`WRAPPERS`).
"""

import dataclasses
import logging
import re
from typing import Any, Callable, Dict, List, Tuple

from torch import nn

from .adapter import ADAPTER_INITS, Adapter
from .bitfit import BITFIT_SCOPES, is_bitfit_param
from .config import PETLConfig, active_methods, as_petl_config
from .lora import LoRALinear
from .prefix import PrefixProvider, PromptEncoder

logger = logging.getLogger(__name__)

_LAYER = r"(encoder|decoder)\.layers\.\d+"
_ATTN = _LAYER + r"\.(self_attn|encoder_attn)"

#: site -> regular expression over module names (full match). The only place that knows OFA's names.
SITES: Dict[str, str] = {
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
}
#: OFA modules used only to generate image codes, never in the forward pass ofa_ext runs: opt-ins
#: (BitFit "all", train_layernorm) skip them so that no trainable parameter goes unused (DDP).
NEVER_TRAIN = r"decoder\.(image_pos_ln|code_layernorm_embedding)\..*"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ADAPTER_SITES = {"attn": "post_attn", "ffn": "post_ffn"}
PREFIX_SIDES = {"encoder": "encoder_self_attn", "decoder": "decoder_self_attn"}
#: model-level attribute (inside ``encoder``/``decoder``) holding a side's prompt encoder; OFA's name
PROMPT_ENCODER_NAME = "{side}_prompt_encoder"


def _lora_wrapper(cfg: PETLConfig) -> Dict[type, Callable[[str, nn.Module, nn.Module], nn.Module]]:
    return {nn.Linear: lambda name, base, model: LoRALinear.from_linear(base, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)}


def _adapter_wrapper(cfg: PETLConfig) -> Dict[type, Callable[[str, nn.Module, nn.Module], nn.Module]]:
    def build(name: str, base: nn.Module, model: nn.Module) -> Adapter:
        layer = model.get_submodule(name.rpartition(".")[0])
        ref = layer.fc2  # adapters act on the layer's residual stream (width = fc2's output)
        dropout = cfg.adapter_dropout if cfg.adapter_dropout is not None else _drop_path_rate(layer)
        return Adapter(ref.out_features, cfg.adapter_dim, dropout, cfg.adapter_init,
                       device=ref.weight.device, dtype=ref.weight.dtype)
    return {nn.Identity: build}


WRAPPERS = {"lora": _lora_wrapper, "adapter": _adapter_wrapper}


def _drop_path_rate(layer: nn.Module) -> float:
    """The drop-path rate of ``layer`` (π-Tuning's adapter dropout), 0 when it has none."""
    rates = [float(getattr(m, "rate", getattr(m, "drop_prob", 0.0)))
             for n, m in layer.named_children() if "drop_path" in n]
    return max(rates, default=0.0)


# ------------------------------------------------------------------------------------------------
def validate(cfg: PETLConfig) -> None:
    """Raise ``ValueError`` naming the option for any bad PETL setting."""
    def bad(option: str, value: Any, expected: str) -> None:
        raise ValueError(f"--{option.replace('_', '-')}={value!r}: expected {expected}")

    if cfg.adapter:
        if cfg.adapter_dim <= 0:
            bad("adapter_dim", cfg.adapter_dim, "an integer > 0")
        if cfg.adapter_init not in ADAPTER_INITS:
            bad("adapter_init", cfg.adapter_init, f"one of {ADAPTER_INITS}")
        unknown = [s for s in _split(cfg.adapter_sites) if s not in ADAPTER_SITES]
        if unknown or not _split(cfg.adapter_sites):
            bad("adapter_sites", cfg.adapter_sites, f"a comma list of {tuple(ADAPTER_SITES)}")
        if cfg.adapter_dropout is not None and not 0.0 <= cfg.adapter_dropout < 1.0:
            bad("adapter_dropout", cfg.adapter_dropout, "a probability in [0, 1)")
    for side in PREFIX_SIDES:
        if getattr(cfg, f"{side}_prompt"):
            if getattr(cfg, f"{side}_prompt_length") < 0:
                bad(f"{side}_prompt_length", getattr(cfg, f"{side}_prompt_length"), "an integer >= 0")
            if cfg.prompt_projection and getattr(cfg, f"{side}_prompt_dim") <= 0:
                bad(f"{side}_prompt_dim", getattr(cfg, f"{side}_prompt_dim"), "an integer > 0")
    if not 0.0 <= cfg.prompt_dropout < 1.0:
        bad("prompt_dropout", cfg.prompt_dropout, "a probability in [0, 1)")
    if cfg.lora:
        if cfg.lora_r <= 0:
            bad("lora_r", cfg.lora_r, "an integer > 0")
        unknown = [t for t in _split(cfg.lora_targets) if t not in LORA_TARGETS]
        if unknown or not _split(cfg.lora_targets):
            bad("lora_targets", cfg.lora_targets, f"a comma list of {LORA_TARGETS} (unknown: {unknown})")
        if not 0.0 <= cfg.lora_dropout < 1.0:
            bad("lora_dropout", cfg.lora_dropout, "a probability in [0, 1)")
    if cfg.bitfit and cfg.bitfit_scope not in BITFIT_SCOPES:
        bad("bitfit_scope", cfg.bitfit_scope, f"one of {BITFIT_SCOPES}")


def _split(csv: str) -> List[str]:
    return [s.strip() for s in csv.split(",") if s.strip()]


def match_site(model: nn.Module, site: str) -> List[Tuple[str, nn.Module]]:
    """Modules whose full name matches ``SITES[site]``; an error when there are none."""
    pattern = re.compile(SITES[site])
    found = [(n, m) for n, m in model.named_modules() if pattern.fullmatch(n)]
    if not found:
        sample = [n for n, _ in model.named_modules() if n][:8]
        raise ValueError(f"PETL site {site!r} (pattern {SITES[site]!r}) matches no module of "
                         f"{type(model).__name__}; module names start with {sample}")
    return found


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _wrap_site(model: nn.Module, site: str, method: str, cfg: PETLConfig) -> List[Tuple[str, nn.Module]]:
    """Replace every module of ``site`` by the ``method`` wrapper chosen by its type."""
    table = WRAPPERS[method](cfg)
    created = []
    for name, base in match_site(model, site):
        build = next((fn for typ, fn in table.items() if type(base) is typ), None)
        if build is None:
            raise TypeError(f"{method}: module {name!r} is a {type(base).__name__}; "
                            f"supported base types: {[t.__name__ for t in table]}")
        new = build(name, base, model)
        _replace(model, name, new)
        created.append((name, new))
    return created


def _attach_prefixes(model: nn.Module, side: str, cfg: PETLConfig) -> Tuple[str, PromptEncoder, int]:
    """One prompt encoder for ``side`` at ``{side}.{side}_prompt_encoder``; a provider per layer."""
    attns = match_site(model, PREFIX_SIDES[side])
    for name, attn in attns:
        if not hasattr(attn, "prefix_provider"):
            raise TypeError(f"{side}_prompt: attention module {name!r} ({type(attn).__name__}) has no "
                            "`prefix_provider` hook, so this backbone cannot take prefixes")
    layer_ids = [int(re.search(r"layers\.(\d+)", n).group(1)) for n, _ in attns]
    if sorted(layer_ids) != list(range(len(attns))):
        raise ValueError(f"{side}_prompt: expected layers 0..{len(attns) - 1}, found {sorted(layer_ids)}")
    ref = attns[0][1]
    weight = ref.q_proj.weight
    encoder = PromptEncoder(
        getattr(cfg, f"{side}_prompt_length"), len(attns), ref.num_heads, ref.head_dim,
        projection=cfg.prompt_projection, hidden_dim=getattr(cfg, f"{side}_prompt_dim"),
        dropout=cfg.prompt_dropout, device=weight.device, dtype=weight.dtype,
    )
    attr = PROMPT_ENCODER_NAME.format(side=side)
    model.get_submodule(side).add_module(attr, encoder)
    for layer, (_, attn) in zip(layer_ids, attns):
        attn.prefix_provider = PrefixProvider(encoder, layer)
    return f"{side}.{attr}", encoder, len(attns)


# ------------------------------------------------------------------------------------------------
def apply_petl(model: nn.Module, cfg: Any) -> nn.Module:
    """Inject the PETL pieces ``cfg`` asks for, freeze everything else, log the result.

    ``cfg`` is a ``PETLConfig`` or any config carrying its fields (the fairseq model config).
    Without a method flag the model is returned untouched (full fine-tuning) — unless
    ``petl_load`` names a piece file, whose stored config then decides the methods.
    Piece keys are added to ``model.optional_state_keys`` so backbone checkpoints still load.
    """
    cfg = as_petl_config(cfg)
    if not active_methods(cfg) and cfg.petl_load:
        from .pieces import read_piece_file  # local: pieces imports this module

        stored = read_piece_file(cfg.petl_load, tensors=False)[1]["petl_config"]
        logger.info("PETL: no method flag given; using the config stored in %s", cfg.petl_load)
        cfg = dataclasses.replace(stored, petl_load=cfg.petl_load)
    methods = active_methods(cfg)
    if not methods:
        return model
    validate(cfg)
    if getattr(model, "petl_config", None) is not None:
        raise RuntimeError("apply_petl: this model already has PETL pieces; build a fresh model")

    rows: List[Tuple[str, str, int, str]] = []  # (method, site, matched, wrapper)
    new_modules: List[Tuple[str, nn.Module]] = []
    if cfg.lora:
        for target in _split(cfg.lora_targets):
            made = _wrap_site(model, target, "lora", cfg)
            new_modules += made
            rows.append(("lora", target, len(made), "LoRALinear"))
    if cfg.adapter:
        for s in _split(cfg.adapter_sites):
            made = _wrap_site(model, ADAPTER_SITES[s], "adapter", cfg)
            new_modules += made
            rows.append(("adapter", ADAPTER_SITES[s], len(made), "Adapter"))
    for side in PREFIX_SIDES:
        if getattr(cfg, f"{side}_prompt"):
            name, encoder, n = _attach_prefixes(model, side, cfg)
            new_modules.append((name, encoder))
            rows.append(("prefix", PREFIX_SIDES[side], n, "PrefixProvider -> " + name))

    piece_names = _piece_parameter_names(new_modules)
    _freeze(model, cfg, piece_names)
    optional = getattr(model, "optional_state_keys", None)
    if optional is None:
        optional = set()
        model.optional_state_keys = optional
    optional.update(piece_names)
    model.petl_config = cfg
    model.petl_piece_names = tuple(sorted(piece_names))
    if cfg.bitfit:
        rows.append(("bitfit", cfg.bitfit_scope, sum(p.requires_grad and is_bitfit_param(n, cfg.bitfit_scope)
                                                     for n, p in model.named_parameters()), "-"))
    _log_table(model, rows)
    _warn_bn_drift(model)
    if cfg.petl_load:
        from .pieces import load_pieces

        load_pieces(model, cfg.petl_load)
    return model


def _piece_parameter_names(new_modules: List[Tuple[str, nn.Module]]) -> set:
    """Full names of the parameters PETL created (LoRA wrappers: only ``lora_*``)."""
    names = set()
    for prefix, module in new_modules:
        for n, _ in module.named_parameters():
            if isinstance(module, LoRALinear) and not n.startswith("lora_"):
                continue  # weight/bias belong to the backbone
            names.add(f"{prefix}.{n}")
    return names


def _freeze(model: nn.Module, cfg: PETLConfig, piece_names: set) -> None:
    """requires_grad=False everywhere but the pieces and the opt-ins, so autograd skips the rest."""
    layernorm_params = set()
    if cfg.train_layernorm:
        for mname, m in model.named_modules():
            if isinstance(m, nn.LayerNorm):
                layernorm_params.update(f"{mname}.{n}" if mname else n for n, _ in m.named_parameters())
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(False)
    never = re.compile(NEVER_TRAIN)
    for name, p in model.named_parameters(remove_duplicate=False):
        opt_in = (
            (cfg.bitfit and is_bitfit_param(name, cfg.bitfit_scope))
            or name in layernorm_params
            or (cfg.train_head and name.split(".")[-2:-1] in (["embed_tokens"], ["output_projection"]))
        )
        train = name in piece_names or (opt_in and not never.fullmatch(name))
        if train:
            p.requires_grad_(True)


def trainable_summary(model: nn.Module) -> Dict[str, Any]:
    """``{"trainable": n, "total": N, "percent": 100·n/N}`` over unique parameters."""
    params = list(model.parameters())  # unique (tied tensors counted once)
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / max(total, 1)}


def _warn_bn_drift(model: nn.Module) -> None:
    """Frozen BatchNorm layers still update running statistics in train mode (π-Tuning's released
    behaviour, `specs/pi_tuning.md` §3.5); those buffers are not pieces, so say it once."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if bns and not getattr(getattr(model, "cfg", None), "freeze_resnet", False):
        logger.warning("PETL: %d BatchNorm layers will update their running statistics in train mode; these "
                       "are not saved in piece files (use --freeze-resnet to keep them fixed)", len(bns))


def _log_table(model: nn.Module, rows: List[Tuple[str, str, int, str]]) -> None:
    lines = [f"{'method':<8} {'site':<18} {'matched':>7}  module", "-" * 60]
    lines += [f"{m:<8} {s:<18} {n:>7}  {w}" for m, s, n, w in rows]
    s = trainable_summary(model)
    lines.append(f"trainable parameters: {s['trainable']:,} / {s['total']:,} ({s['percent']:.3f}%)")
    logger.info("PETL injection\n%s", "\n".join(lines))
