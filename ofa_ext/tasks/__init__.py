"""Registered fairseq tasks."""

from . import refcoco  # noqa: F401
from . import crossmodal_finetune  # noqa: F401
from . import orca  # noqa: F401
from . import prompt_tuning  # noqa: F401
from . import prompt_transfer  # noqa: F401
from . import pare  # noqa: F401
from . import crossmodal_adaptation  # noqa: F401
