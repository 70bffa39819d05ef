"""Registered fairseq tasks."""

from . import refcoco  # noqa: F401
