"""Read OFA checkpoint files (official layout): the state dict and the stored config.

Building a model from a file is one level up (`ofa_ext.api.load_official_checkpoint`), because
the model with its PETL options is registration glue and the backbone never imports it. A file is a pickled dict with `model` (the state dict) and `cfg` (fairseq config; `cfg["model"]` a
Namespace or dict) or, in older files, `args` (a Namespace). The stored config wins over arch
defaults; keys it lacks get defaults (specs/ofa.md §10). Files are read with `weights_only=True`
and `argparse.Namespace` allow-listed; anything else pickled is refused unless the caller trusts
the file (`allow_unsafe_pickle=True`).
"""

import argparse
import os
import pickle
from typing import Any, Dict, Mapping

import torch

from .config import read_attr
from .mismatch import CheckpointMismatchError  # noqa: F401  (re-exported for callers)

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


def stored_config_values(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The stored model config as a plain dict; without one, the arch and sizes read off the keys.

    Turning this into a full config (arch defaults, dataclass defaults) is the registration
    layer's job (`ofa_ext.api.config_from_checkpoint`): the backbone imports nothing above it.
    """
    stored = _plain(stored_model_config(state))
    if stored:
        return stored
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
    return stored
