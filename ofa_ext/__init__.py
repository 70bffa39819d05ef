"""ofa_ext: a fairseq plugin for tuning and transferring OFA-style multimodal models.

Use it as ``fairseq-train --user-dir ofa_ext ...``. Importing the package registers every model,
task and criterion with fairseq; fairseq itself only imports ``models/`` and ``tasks/`` of a user
dir, so ``criterions`` is imported here. Python caches the import, so registration happens once.
Importing also installs the one-line reporting of bad input (`utils/errors.py`) and two log
filters (`utils/quiet_logs.py`). When nothing has imported fairseq yet (every ``ofa-*`` command),
scikit-learn and scipy.stats stay out of its start-up (`utils/deferred_imports.py`: ~2 s a process).
"""

__version__ = "0.1.0"

from .utils.deferred_imports import deferred as _deferred  # noqa: E402

with _deferred():
    from . import models, tasks, criterions, optim  # noqa: E402,F401  (registrations)
from .utils import errors as _errors, quiet_logs as _quiet_logs  # noqa: E402

_errors.install_excepthook()
_quiet_logs.install()
