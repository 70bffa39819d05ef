"""BitFit: train a chosen set of bias terms only (no new parameters)."""

from .select import BITFIT_SCOPES, is_bitfit_param, select_bitfit

__all__ = ["BITFIT_SCOPES", "is_bitfit_param", "select_bitfit"]
