"""Registered fairseq criterions."""

from . import label_smoothed_ce  # noqa: F401
from . import crossmodal_loss  # noqa: F401
from . import orca_align  # noqa: F401
from . import pare_mix  # noqa: F401
from . import crossmodal_adaptation  # noqa: F401
