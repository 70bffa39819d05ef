"""Read OFA checkpoint files (official layout) and build the model from their stored config.

    from ofa_ext.models.ofa.checkpoint import load_official_checkpoint
    model, cfg = load_official_checkpoint("ofa_base.pt")            # eval-ready, weights loaded

A file is a pickled dict with `model` (the state dict) and `cfg` (fairseq config; `cfg["model"]` a
Namespace or dict) or, in older files, `args` (a Namespace). The stored config wins over arch
defaults; keys it lacks get defaults (specs/ofa.md §10). Files are read with `weights_only=True`
and `argparse.Namespace` allow-listed; anything else pickled is refused unless the caller trusts
the file (`allow_unsafe_pickle=True`).
"""

import argparse
import os
import pickle
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from .config import read_attr
from .mismatch import CheckpointMismatchError  # noqa: F401  (re-exported for callers)
from .placeholder_dict import SizedDictionary

# Official files pickle argparse.Namespace, fairseq its OmegaConf config: allow exactly these for
# every torch.load in the process (fairseq's own loader included), keeping weights_only=True.
from ...utils import safe_load  # noqa: E402,F401
from ...utils.checkpoint_files import diagnose  # noqa: E402


class CheckpointError(RuntimeError):
    """A file that cannot be read as an OFA checkpoint (missing, truncated, corrupt, wrong layout)."""


def read_checkpoint(path: str, allow_unsafe_pickle: bool = False) -> Dict[str, Any]:
    """torch.load a checkpoint on the CPU with clear errors for unreadable files."""
    problem = diagnose(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    size = os.path.getsize(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({size} bytes): {e}") from None
        if not allow_unsafe_pickle:
            raise CheckpointError(
                f"{path}: the file pickles objects beyond tensors and argparse.Namespace; load it with "
                f"allow_unsafe_pickle=True only if you trust its source. torch said: {str(e).splitlines()[-1]}"
            ) from None
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch surfaces corrupt files as many types (RuntimeError, EOFError, IndexError, ...)
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({size} bytes); the file is truncated or corrupt "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' entry, found {type(state).__name__}")
    if "model" not in state or not isinstance(state["model"], Mapping):
        raise CheckpointError(f"{path}: no 'model' state dict in the file (top-level keys: {sorted(state)[:10]})")
    return state


def stored_model_config(state: Mapping[str, Any]) -> Any:
    """The model part of the stored config: cfg["model"] (Namespace/dict) or the legacy `args`."""
    cfg = state.get("cfg")
    if cfg is not None:
        model_cfg = read_attr(cfg, "model")
        if model_cfg is not None:
            return model_cfg
    if state.get("args") is not None:
        return state["args"]
    return None


def _plain(cfg: Any) -> Dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, argparse.Namespace):
        return dict(vars(cfg))
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return dict(OmegaConf.to_container(cfg, resolve=False))
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def config_from_checkpoint(state: Mapping[str, Any], arg_overrides: Optional[Mapping[str, Any]] = None):
    """OFAConfig from a checkpoint's stored config (+ model-field overrides; other keys ignored).

    Without any stored config the arch is guessed from the keys and the run-script flags are
    read off the keys too.
    """
    from ..registered import OFAConfig, to_ofa_config  # registration module imports us

    stored = _plain(stored_model_config(state))
    if not stored:
        from .mismatch import describe_state_dict, guess_arch

        info = describe_state_dict(state["model"])
        arch = guess_arch(state["model"])
        stored = {"_name": arch if arch.startswith("ofa_") else "ofa"}
        if "embed_dim" in info:
            stored.update(encoder_embed_dim=info["embed_dim"], encoder_layers=info["encoder_layers"],
                          decoder_layers=info["decoder_layers"], encoder_attention_heads=info.get("heads"),
                          encoder_ffn_embed_dim=info.get("ffn_dim"), resnet_type=info["resnet_type"])
        flags = info["flags"]
        stored.update(scale_attn="--scale-attn" in flags, scale_fc="--scale-fc" in flags,
                      scale_heads="--scale-heads" in flags, disable_entangle=True)
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
    """Build model `ofa` from the file's stored config, load its weights, return (model.eval(), cfg).

    The dictionary is `task.source_dictionary`, else `dictionary`, else a size-only stand-in with
    as many entries as the checkpoint's embedding. Raises `CheckpointError` for unreadable files and
    `CheckpointMismatchError` (one grouped report) when the weights do not fit.
    """
    from ..registered import OFAFairseqModel, apply_petl

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
        raise CheckpointMismatchError(
            f"{path}: {e}", e.missing, e.unexpected, e.mismatched
        ) from None
    return model.eval(), cfg
