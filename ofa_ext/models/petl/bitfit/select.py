"""BitFit: which bias tensors train.

``"pi_tuning"`` is the released rule (`specs/pi_tuning.md` §3.4): a parameter trains iff its full
name contains both ``layer_norm`` and ``bias``, or both ``fc`` and ``bias`` (LayerNorm biases of
`*_layer_norm` modules and fc1/fc2 biases; attention and `attn_ln` biases stay frozen).
``"all"`` is standard BitFit: every parameter whose last name component is ``bias``.
"""

from typing import Iterable, List

BITFIT_SCOPES = ("pi_tuning", "all")


def is_bitfit_param(name: str, scope: str = "pi_tuning") -> bool:
    """Whether the parameter called ``name`` trains under BitFit ``scope``."""
    if scope == "pi_tuning":
        return "bias" in name and ("layer_norm" in name or "fc" in name)
    if scope == "all":
        return name.rsplit(".", 1)[-1] == "bias"
    raise ValueError(f"bitfit_scope must be one of {BITFIT_SCOPES}, got {scope!r}")


def select_bitfit(names: Iterable[str], scope: str = "pi_tuning") -> List[str]:
    """The subset of ``names`` that BitFit trains."""
    return [n for n in names if is_bitfit_param(n, scope)]
