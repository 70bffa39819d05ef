"""Loading this plugin's own fairseq checkpoints (config, task and model together)."""

import os
from typing import Optional


def load_fairseq_checkpoint(path: str, overrides: Optional[dict] = None):
    """(model, cfg, task) of a checkpoint written by `fairseq-train --user-dir ofa_ext`, on the CPU.

    `overrides` replace stored task/model options (e.g. `data`, `petl_load`).
    """
    from fairseq import checkpoint_utils

    import ofa_ext  # noqa: F401  (registrations)

    if not os.path.isfile(path):
        raise SystemExit(f"checkpoint not found: {path}")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides or {})
    return models[0], cfg, task
