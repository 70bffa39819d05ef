"""Optimisation pieces OFA's recipes need that upstream fairseq lacks."""

from . import warmup_ratio_schedule  # noqa: F401
