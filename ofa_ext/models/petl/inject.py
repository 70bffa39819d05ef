"""``apply_petl``: inject PETL pieces into a model, freeze the rest, report what trains.

The backbone knows nothing of PETL. It offers generic hooks (see ``toy.py`` for OFA's contract):
``nn.Linear`` projections, ``post_attn``/``post_ffn`` identity slots (or, in Hugging Face layers,
the ``nn.Linear`` an adapter follows), a ``prefix_provider`` attribute on attention modules, and on
bodies an ``input_prompt`` hook. Where PETL attaches is declared by site tables owned by the bodies
(``models/bodies``; resolved in ``sites.py``); a site that matches no module is an error (a typo
never passes silently), and the wrapper for a matched module is chosen by its type
(:data:`WRAPPERS`). Freezing lives in ``freeze.py``.
"""

import dataclasses
import logging
import re
from typing import Any, Callable, Dict, List, Sequence, Tuple

from torch import nn

from ..bodies.base import find_bodies
from ..bodies.ofa import OFA_SITES
from .adapter import ADAPTER_INITS, Adapter, LinearThenAdapter
from .bitfit import BITFIT_SCOPES
from .config import PETLConfig, active_methods, as_petl_config
from .freeze import freeze_backbone_parts, freeze_for_petl
from .input_prompt import InputPrompt
from .lora import LoRALinear
from .prefix import PrefixProvider, PromptEncoder
from .sites import match_site

logger = logging.getLogger(__name__)

#: OFA's site table (site -> module-name pattern); kept under its old name for callers. The tables
#: of every body live with the bodies: ``models/bodies/ofa.py`` and ``models/bodies/hf.py``.
SITES: Dict[str, str] = OFA_SITES.sites
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ADAPTER_SITES = {"attn": "post_attn", "ffn": "post_ffn"}
PREFIX_SIDES = {"encoder": "encoder_self_attn", "decoder": "decoder_self_attn"}
#: attribute (on the module holding a stack's ``layers``) with that side's prompt encoder; OFA's name
PROMPT_ENCODER_NAME = "{side}_prompt_encoder"


def _lora_wrapper(cfg: PETLConfig) -> Dict[type, Callable[[str, nn.Module, nn.Module], nn.Module]]:
    return {nn.Linear: lambda name, base, model: LoRALinear.from_linear(base, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)}


def _adapter_wrapper(cfg: PETLConfig) -> Dict[type, Callable[[str, nn.Module, nn.Module], nn.Module]]:
    def in_slot(name: str, base: nn.Module, model: nn.Module) -> Adapter:
        layer = model.get_submodule(name.rpartition(".")[0])
        ref = layer.fc2  # adapters act on the layer's residual stream (width = fc2's output)
        dropout = cfg.adapter_dropout if cfg.adapter_dropout is not None else _drop_path_rate(layer)
        return Adapter(ref.out_features, cfg.adapter_dim, dropout, cfg.adapter_init,
                       device=ref.weight.device, dtype=ref.weight.dtype)

    def after(name: str, base: nn.Module, model: nn.Module) -> LinearThenAdapter:
        w = base.weight
        adapter = Adapter(base.out_features, cfg.adapter_dim, cfg.adapter_dropout or 0.0, cfg.adapter_init,
                          device=w.device, dtype=w.dtype)
        return LinearThenAdapter(base, adapter)

    return {nn.Identity: in_slot, nn.Linear: after, LoRALinear: after}


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
    if cfg.input_prompt_length < 0:
        bad("input_prompt_length", cfg.input_prompt_length, "an integer >= 0 (0: off)")
    if cfg.bitfit and cfg.bitfit_scope not in BITFIT_SCOPES:
        bad("bitfit_scope", cfg.bitfit_scope, f"one of {BITFIT_SCOPES}")


def _split(csv: str) -> List[str]:
    return [s.strip() for s in csv.split(",") if s.strip()]


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
    stack = attns[0][0].rpartition(".layers.")[0]  # "encoder", or "body.encoder" inside a body
    model.get_submodule(stack).add_module(attr, encoder)
    for layer, (_, attn) in zip(layer_ids, attns):
        attn.prefix_provider = PrefixProvider(encoder, layer)
    return f"{stack}.{attr}", encoder, len(attns)


def _attach_input_prompts(model: nn.Module, cfg: PETLConfig) -> List[Tuple[str, nn.Module]]:
    """An :class:`InputPrompt` on the ``input_prompt`` hook of every body in ``model``."""
    bodies = find_bodies(model)
    if not bodies:
        raise ValueError(f"--input-prompt-length={cfg.input_prompt_length}: {type(model).__name__} contains no body "
                         "(ofa_ext.models.bodies) to prepend prompts to; OFA's encoder-decoder takes --encoder-prompt")
    made = []
    for name, body in bodies.items():
        ref = next(body.parameters())
        body.input_prompt = InputPrompt(cfg.input_prompt_length, body.width, device=ref.device, dtype=ref.dtype)
        made.append((f"{name}.input_prompt" if name else "input_prompt", body.input_prompt))
    return made


# ------------------------------------------------------------------------------------------------
def apply_petl(model: nn.Module, cfg: Any, keep_trainable: Sequence[str] = ()) -> nn.Module:
    """Inject the PETL pieces ``cfg`` asks for, freeze everything else, log the result.

    ``cfg`` is a ``PETLConfig`` or any config carrying its fields (the fairseq model config).
    Without a method flag the model is returned untouched (full fine-tuning) — unless
    ``petl_load`` names a piece file, whose stored config then decides the methods.
    ``keep_trainable``: module-name prefixes that keep training beside the pieces (a task's
    embedder and head); they are saved in piece files with the pieces.
    Piece keys are added to ``model.optional_state_keys`` so backbone checkpoints still load.
    The backbone's freeze options carried by ``cfg`` (``freeze_resnet`` ...) are applied last.
    """
    raw, cfg = cfg, as_petl_config(cfg)
    if not active_methods(cfg) and cfg.petl_load:
        from .pieces import read_piece_file  # local: pieces imports this module

        stored = read_piece_file(cfg.petl_load, tensors=False)[1]["petl_config"]
        logger.info("PETL: no method flag given; using the config stored in %s", cfg.petl_load)
        cfg = dataclasses.replace(stored, petl_load=cfg.petl_load)
    validate(cfg)
    methods = active_methods(cfg)
    if not methods:
        freeze_backbone_parts(model, raw)
        return model
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
            rows.append(("adapter", ADAPTER_SITES[s], len(made), type(made[0][1]).__name__))
    for side in PREFIX_SIDES:
        if getattr(cfg, f"{side}_prompt"):
            name, encoder, n = _attach_prefixes(model, side, cfg)
            new_modules.append((name, encoder))
            rows.append(("prefix", PREFIX_SIDES[side], n, "PrefixProvider -> " + name))
    if cfg.input_prompt_length:
        made = _attach_input_prompts(model, cfg)
        new_modules += made
        rows.append(("input", "input_prompt", len(made), f"InputPrompt(P={cfg.input_prompt_length})"))

    piece_names = _piece_parameter_names(model, [m for _, m in new_modules])
    opted = freeze_for_petl(model, cfg, piece_names, keep_trainable)
    freeze_backbone_parts(model, raw)
    optional = getattr(model, "optional_state_keys", None)
    if optional is None:
        optional = set()
        model.optional_state_keys = optional
    optional.update(piece_names)
    model.petl_config = cfg
    model.petl_piece_names = tuple(sorted(piece_names))
    model.petl_keep_trainable = tuple(keep_trainable)
    rows += [("opt-in", option, n, "requires_grad") for option, n in opted.items()]
    _log_table(model, rows)
    _warn_bn_drift(model)
    if cfg.petl_load:
        from .pieces import load_pieces

        load_pieces(model, cfg.petl_load)
    return model


def _piece_parameter_names(model: nn.Module, created: List[nn.Module]) -> set:
    """Full names (after all wrapping) of the parameters PETL created: LoRA wrappers' ``lora_*``,
    the adapter inside an after-projection wrapper, prompt encoders and input prompts whole."""
    owners = {}
    for m in created:
        if isinstance(m, LinearThenAdapter):
            owners[id(m.adapter)] = None
        else:
            owners[id(m)] = "lora_" if isinstance(m, LoRALinear) else None
    names = set()
    for mname, module in model.named_modules():
        if id(module) not in owners:
            continue
        only = owners[id(module)]
        for n, _ in module.named_parameters():
            if only is None or n.startswith(only):  # a LoRA layer's weight/bias belong to the backbone
                names.add(f"{mname}.{n}" if mname else n)
    return names


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
