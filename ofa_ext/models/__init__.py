"""Models: the OFA backbone (`ofa/`), its fairseq registration and the PETL layer library."""

from . import registered  # noqa: F401  (registers model `ofa` and its archs)
from .crossmodal import model as _crossmodal_model  # noqa: F401,E402  (registers model `crossmodal_model`)
from .crossmodal import pare_model as _pare_model  # noqa: F401,E402  (registers model `pare_model`)
from .crossmodal import adaptation as _xmodal_head  # noqa: F401,E402  (registers model `xmodal_head`)
