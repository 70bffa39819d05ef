"""Models: the OFA backbone and the parameter-efficient (PETL) layer library."""

from . import ofa  # noqa: F401  (registers model `ofa` and its archs)
