"""Model-level merge contract for LoRA: merge, unmerge, merge-and-unload every ``LoRALinear``."""

from typing import List

from torch import nn

from .layer import LoRALinear


def lora_modules(model: nn.Module) -> List[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module, safe_merge: bool = True) -> nn.Module:
    """Fold every LoRA delta into its base weight (fp32 maths; reversible with :func:`unmerge_lora`)."""
    for m in lora_modules(model):
        m.merge(safe_merge=safe_merge)
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Restore every merged base weight exactly."""
    for m in lora_modules(model):
        m.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every ``LoRALinear`` by a plain ``nn.Linear`` with the merged weight (in place).

    The result has the backbone's own keys only (no ``lora_A``/``lora_B``); other PETL pieces
    (adapters, prefixes) cannot be folded into the backbone and stay as they are.
    """
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, m in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.merge_and_unload())
    return model
