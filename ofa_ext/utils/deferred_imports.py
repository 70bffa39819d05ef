"""Keep scikit-learn and scipy.stats out of every process's start-up.

Importing fairseq imports all of its criterions and tasks; ``criterions/sentence_prediction.py``
and ``tasks/audio_classification.py`` import scikit-learn's and scipy's statistics at module level
for metrics that only their own runs compute. That is about 2 s of the ~5 s an ``ofa-*`` command
spends importing before it does anything (measured: ``import fairseq_cli.train, ofa_ext`` 2.9 s
with this, 5.1 s without), paid by every training run, evaluation and task embedding. While fairseq
is first imported, :func:`deferred` puts stand-ins in ``sys.modules``; a name taken from a stand-in
is a function that imports the real module when it is called. The stand-ins leave ``sys.modules``
as soon as fairseq is in, so every later import gets the real packages.
"""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

# the modules that fairseq's own imports pull in for metrics (see the module docstring)
FAIRSEQ_METRIC_MODULES = ("sklearn", "sklearn.metrics", "scipy.stats")


class _StandIn(types.ModuleType):
    """A module whose public names are imported from the real module on first call."""

    def __getattr__(self, name: str):
        if name.startswith("_"):  # dunders and private names: as for a module that lacks them
            raise AttributeError(name)
        sub = sys.modules.get(f"{self.__name__}.{name}")
        if isinstance(sub, _StandIn):  # `from sklearn import metrics`
            return sub
        return _deferred_call(self.__name__, name)


def _deferred_call(module: str, name: str) -> Callable:
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported when first called"
    return call


@contextmanager
def deferred(names: Iterable[str] = FAIRSEQ_METRIC_MODULES) -> Iterator[None]:
    """Stand-ins for ``names`` not imported yet, for the duration of the block."""
    placed = [n for n in names if n not in sys.modules]
    for n in placed:
        sys.modules[n] = _StandIn(n)
    try:
        yield
    finally:
        for n in placed:
            if isinstance(sys.modules.get(n), _StandIn):
                del sys.modules[n]
