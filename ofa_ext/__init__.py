"""ofa_ext: a fairseq plugin for tuning and transferring OFA-style multimodal models.

Use it as ``fairseq-train --user-dir ofa_ext ...``. Importing the package registers every model,
task and criterion with fairseq; fairseq itself only imports ``models/`` and ``tasks/`` of a user
dir, so ``criterions`` is imported here. Python caches the import, so registration happens once.
"""

__version__ = "0.1.0"

from . import models, tasks, criterions, optim  # noqa: E402,F401  (registrations)
