"""Registered fairseq tasks."""

from . import refcoco  # noqa: F401
from . import crossmodal_finetune  # noqa: F401
from . import crossmodal_adaptation  # noqa: F401
