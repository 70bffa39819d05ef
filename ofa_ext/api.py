"""The small public Python API: load an OFA model from a checkpoint file, ready for PETL.

    from ofa_ext.api import load_official_checkpoint
    model, cfg = load_official_checkpoint("ofa_base.pt")            # eval mode, official weights

This is the top floor (DESIGN.md): it may import the registration glue and PETL; the backbone
(`models/ofa`) only reads files and never builds the registered model itself.
"""

from typing import Any, Mapping, Optional, Tuple

import torch


# --------------------------------------------------------------------------- OFA checkpoints
def config_from_checkpoint(state: Mapping[str, Any], arg_overrides: Optional[Mapping[str, Any]] = None):
    """`OFAConfig` from a checkpoint's stored config (+ model-field overrides; other keys ignored).

    Without any stored config the arch, the sizes and the run-script flags are read off the keys.
    """
    from .models.ofa.checkpoint import stored_config_values
    from .models.registered import OFAConfig, to_ofa_config

    stored = stored_config_values(state)
    for k, v in (arg_overrides or {}).items():
        if k in OFAConfig.__dataclass_fields__:
            stored[k] = v
    return to_ofa_config(stored)


def load_official_checkpoint(
    path: str,
    arg_overrides: Optional[Mapping[str, Any]] = None,
    task=None,
    dictionary=None,
    strict: bool = True,
    allow_unsafe_pickle: bool = False,
) -> Tuple[torch.nn.Module, Any]:
    """Build model `ofa` from the file's stored config (PETL options included), load its weights,
    return (model.eval(), cfg).

    The dictionary is `task.source_dictionary`, else `dictionary`, else a size-only stand-in with
    as many entries as the checkpoint's embedding. Raises `CheckpointError` for unreadable files and
    `CheckpointMismatchError` (one grouped report) when the weights do not fit.
    """
    from .models.ofa.checkpoint import read_checkpoint
    from .models.ofa.mismatch import CheckpointMismatchError
    from .models.ofa.placeholder_dict import SizedDictionary
    from .models.petl import apply_petl
    from .models.registered import OFAFairseqModel

    state = read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    cfg = config_from_checkpoint(state, arg_overrides)
    if task is not None:
        dictionary = task.source_dictionary
    if dictionary is None:
        emb = state["model"].get("encoder.embed_tokens.weight")
        dictionary = SizedDictionary(int(emb.shape[0]) if emb is not None else SizedDictionary().size)
    model = apply_petl(OFAFairseqModel.build_from_config(cfg, dictionary), cfg)
    try:
        model.load_state_dict(state["model"], strict=strict, model_cfg=cfg)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{path}: {e}", e.missing, e.unexpected, e.mismatched) from None
    return model.eval(), cfg
