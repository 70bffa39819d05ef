"""One ordinary piece set from an expert mix, with the mix's outputs: inference costs one expert.

* parameter-mixed pieces (adapters, biases, ``parameters`` mixing): the mixed tensor Σ_k w_k θ_k;
* LoRA with ``pi_tuning`` mixing: a LoRA of rank K·r, ``A' = [A_1; …; A_K]``,
  ``B' = [w_1 B_1 … w_K B_K]`` (alpha scaled by K too, so alpha/r and every output stay the same),
  or, with :func:`lora_delta_weights`, the dense update ``(alpha/r) Σ_k w_k B_k A_k`` of each
  projection (to merge into the backbone);
* prefixes with ``pi_tuning`` mixing: one table [P, n·2C] whose layer-l columns are
  ``Σ_k w_{l,k} kv_{k,l}`` (each expert's MLP evaluated), i.e. a prefix *without* projection.

Exact at inference (dropout off); the dropouts of the collapsed pieces are the first expert's.
"""

import dataclasses
from typing import Dict

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .interpolation import MIX_ATTR, _mix_of, _model_petl_config


def collapsed_petl_config(model: nn.Module):
    """The ``PETLConfig`` of :func:`collapse`'s pieces (LoRA rank K·r, prefixes without projection)."""
    mix = _mix_of(model)
    cfg = _model_petl_config(model)
    changes = dict(mix.spec.expert_options[0]) if mix.spec.expert_options else {}
    K = len(mix.spec.experts)
    if any(kind == "lora" for *_, kind in mix.targets):
        changes.update(lora_r=K * cfg.lora_r, lora_alpha=K * cfg.lora_alpha)
    if mix.prompt_encoders:
        changes.update(prompt_projection=False)
    return dataclasses.replace(cfg, **changes)


def collapse(model: nn.Module) -> Dict[str, Tensor]:
    """The mixed pieces as an ordinary piece state dict (name → tensor) for :func:`collapsed_petl_config`."""
    mix = _mix_of(model)
    out = {}
    with torch.no_grad():
        for module_name, pname, _, kind in mix.targets:
            if kind != "stack":
                value = getattr(model.get_submodule(module_name), pname)
                out[f"{module_name}.{pname}" if module_name else pname] = value.detach().clone()
        for name in mix.prompt_encoders:
            out[f"{name}.embedding.weight"] = model.get_submodule(name).mixed_table().clone()
    return out


def lora_delta_weights(model: nn.Module) -> Dict[str, Tensor]:
    """The dense update ``(alpha/r) B A`` [out, in] of every LoRA projection (module name → delta);
    for a ``pi_tuning`` mix this is ``(alpha/r) Σ_k w_k B_k A_k``."""
    from .petl.lora import LoRALinear

    with torch.no_grad():
        return {n: m.get_delta_weight().detach().clone() for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def unload_interpolation(model: nn.Module) -> nn.Module:
    """Replace the mix by the plain trainable pieces of :func:`collapse` (in place).

    The model is then an ordinary PETL model with ``petl_config`` = :func:`collapsed_petl_config`:
    ``save_pieces`` writes a normal piece file that loads onto a model built with that config.
    """
    mix = _mix_of(model)
    cfg = collapsed_petl_config(model)
    values = collapse(model)
    for module_name, pname, _, kind in mix.targets:
        module = model.get_submodule(module_name)
        parametrize.remove_parametrizations(module, pname, leave_parametrized=kind != "stack")
        getattr(module, pname).requires_grad_(True)
        if kind == "lora":
            module.use_expert_dropouts(None)
            module.r, module.alpha = cfg.lora_r, cfg.lora_alpha  # alpha/r, i.e. module.scaling, unchanged
            module.lora_dropout = nn.Dropout(cfg.lora_dropout) if cfg.lora_dropout > 0 else nn.Identity()
    for module_name, pname, primary in mix.tied:  # re-tie to the primary's new Parameter
        module = model.get_submodule(module_name)
        parametrize.remove_parametrizations(module, pname, leave_parametrized=False)
        delattr(module, pname)
        setattr(module, pname, model.get_parameter(primary))
    pieces = set(getattr(model, "petl_piece_names", ()))
    for name in mix.prompt_encoders:
        encoder = model.get_submodule(name)
        encoder.mix_experts(None)
        pieces = {n for n in pieces if not n.startswith(name + ".")} | {f"{name}.embedding.weight"}
        encoder.use_table(values[f"{name}.embedding.weight"])
        encoder.dropout.p = cfg.prompt_dropout
    for h in mix.hooks:
        h.remove()
    del model._modules[MIX_ATTR]
    model.petl_config = cfg
    model.petl_piece_names = tuple(sorted(pieces))
    optional = getattr(model, "optional_state_keys", None)
    if isinstance(optional, set):
        optional.difference_update({k for k in optional if k.startswith(MIX_ATTR) or ".parametrizations." in k})
        optional.update(pieces)
    return model
