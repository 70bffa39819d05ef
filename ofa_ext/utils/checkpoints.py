"""Loading this plugin's own fairseq checkpoints (config, task and model together)."""

from typing import Optional

from .checkpoint_files import CheckpointFileError, check_checkpoint_file


def load_fairseq_checkpoint(path: str, overrides: Optional[dict] = None, what: str = "checkpoint"):
    """(model, cfg, task) of a checkpoint written by `fairseq-train --user-dir ofa_ext`, on the CPU.

    `overrides` replace stored task/model options (e.g. `data`, `petl_load`). A missing, empty,
    truncated or foreign file raises :class:`CheckpointFileError` naming `what` and the file.
    """
    import pickle

    from fairseq import checkpoint_utils

    import ofa_ext  # noqa: F401  (registrations)

    check_checkpoint_file(path, what)
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides or {})
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not any(m in str(e) for m in ("PytorchStreamReader", "zip archive")):
            raise  # not torch failing to read the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            first = "it pickles objects beyond tensors and configs (refused: loading it could run code)"
        raise CheckpointFileError(f"{what} {path}: cannot read it as a fairseq checkpoint: {first}") from None
    return models[0], cfg, task
