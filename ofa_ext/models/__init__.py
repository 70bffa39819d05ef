"""Models: the OFA backbone (`ofa/`), its fairseq registration and the PETL layer library."""

from . import registered  # noqa: F401  (registers model `ofa` and its archs)
