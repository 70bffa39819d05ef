"""Piece files: exactly the trainable PETL tensors of one model, self-described.

Format (``format = "ofa_ext.petl.pieces"``, ``format_version = 1``): one ``.safetensors`` file.
Tensors are the model's trainable parameters under their full model names (tied tensors once,
under their first name). The safetensors header metadata (str → str, every value JSON-encoded)
holds:

=================  ==========  ====================================================================
key                required    value
=================  ==========  ====================================================================
format             yes         ``"ofa_ext.petl.pieces"``
format_version     yes         int; a file newer than this reader is refused
petl_config        yes         the ``PETLConfig`` fields (dict); unknown fields warn and are ignored
methods            yes         e.g. ``["adapter", "lora"]``
backbone           yes         ``kind`` (body kind; absent = ``"ofa"``), shapes, ``digest``
package_version    no          ofa_ext version that wrote the file
arch               no          base arch name, e.g. ``"ofa_base"``
task               no          task name, e.g. ``"refcoco"``
extra              no          free dict (training step, scores, ...)
keep_trainable     no          module prefixes trained beside the pieces (``apply_petl(keep_trainable=)``)
=================  ==========  ====================================================================

No pickle: piece files are shared between people. Writes are atomic (temporary file + rename)
and verified by reading the file back.
"""

import hashlib
import json
import logging
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .config import STRUCTURAL_FIELDS, PETLConfig, active_methods, as_petl_config, petl_config_from_dict, petl_config_to_dict
from .lora import unmerge_lora
from ..bodies.base import find_bodies
from ...utils.files import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "ofa_ext.petl.pieces"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "petl_config", "methods", "backbone")
OPTIONAL_KEYS = ("package_version", "arch", "task", "extra", "keep_trainable")


def piece_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The trainable tensors (what the optimiser updates), detached, by full parameter name."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def backbone_signature(model: nn.Module) -> Dict[str, Any]:
    """``kind`` (the body's, or ``"ofa"`` for OFA's encoder-decoder), the dimensions a piece file
    depends on, and a digest of every backbone parameter name/shape."""
    bodies = find_bodies(model)
    sig: Dict[str, Any] = {}
    if bodies:
        if len(bodies) == 1:
            body = next(iter(bodies.values()))
            sig = {"kind": body.kind, **body.signature()}
        else:
            sig = {"kind": ",".join(b.kind for b in bodies.values())}
            sig.update({f"{name}/{k}": v for name, b in bodies.items() for k, v in b.signature().items()})
    else:
        sig["kind"] = "ofa"
        for side in ("encoder", "decoder"):
            layers = getattr(getattr(model, side, None), "layers", None)
            if layers is None:
                continue
            sig[f"{side}_layers"] = len(layers)
            if len(layers):
                first = layers[0]
                sig[f"{side}_embed_dim"] = first.fc1.in_features
                sig[f"{side}_ffn_dim"] = first.fc1.out_features
                sig[f"{side}_heads"] = first.self_attn.num_heads
        embed = getattr(getattr(model, "encoder", None), "embed_tokens", None)
        if embed is not None:
            sig["vocab"] = embed.num_embeddings
    pieces = set(getattr(model, "petl_piece_names", ()))
    rows = sorted(f"{n}:{tuple(p.shape)}" for n, p in model.named_parameters() if n not in pieces)
    sig["digest"] = hashlib.sha1("\n".join(rows).encode()).hexdigest()[:16]
    return sig


def _package_version() -> str:
    try:
        from ofa_ext import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


def save_pieces(
    model: nn.Module,
    path: str,
    cfg: Optional[Any] = None,
    arch: Optional[str] = None,
    task: Optional[str] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, torch.Tensor]:
    """Write the trainable tensors of ``model`` and their description to ``path`` (atomically).

    ``cfg`` defaults to the config ``apply_petl`` stored on the model. Returns what was saved.
    """
    cfg = as_petl_config(cfg if cfg is not None else getattr(model, "petl_config", None) or PETLConfig())
    tensors = {n: t.to("cpu", copy=True).contiguous() for n, t in piece_state_dict(model).items()}
    if not tensors:
        raise ValueError(f"save_pieces({path!r}): the model has no trainable tensors; call apply_petl first")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "methods": active_methods(cfg),
        "petl_config": {**petl_config_to_dict(cfg), "petl_load": None},
        "arch": arch,
        "backbone": backbone_signature(model),
        "task": task,
        "extra": extra or {},
        "keep_trainable": list(getattr(model, "petl_keep_trainable", ())),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in meta.items()})
    back, _ = read_piece_file(path)  # verify what a reader will see (PEFT #286: empty adapter files)
    if back.keys() != tensors.keys() or any(not torch.equal(back[k], v) for k, v in tensors.items()):
        raise RuntimeError(f"save_pieces: {path} does not read back as written")
    logger.info("saved %d PETL tensors (%s parameters) to %s", len(tensors),
                f"{sum(t.numel() for t in tensors.values()):,}", path)
    return tensors


def read_piece_file(path: str, tensors: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(tensors on CPU, metadata) of a piece file, without a model.

    ``meta["petl_config"]`` is a ``PETLConfig``; the other values are decoded JSON. With
    ``tensors=False`` only the header is read.
    """
    try:
        with safe_open(path, framework="pt") as f:
            raw = f.metadata() or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"piece file not found: {path}") from None
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path}: not a safetensors piece file ({e})") from e
    try:
        meta = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata is not JSON-encoded ({e}); not an ofa_ext piece file") from e
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: piece file lacks required metadata {missing} (has {sorted(meta)})")
    if meta["format"] != FORMAT:
        raise ValueError(f"{path}: format {meta['format']!r}, expected {FORMAT!r}")
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise ValueError(f"{path}: piece format version {meta['format_version']} was written by a newer "
                         f"ofa_ext ({meta.get('package_version')}); this reader knows version {FORMAT_VERSION}")
    unknown = sorted(set(meta) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        logger.warning("%s: ignoring unknown piece metadata %s", path, unknown)
    cfg, unknown_fields = petl_config_from_dict(meta["petl_config"])
    if unknown_fields:
        logger.warning("%s: ignoring unknown PETL config fields %s (newer writer?)", path, unknown_fields)
    meta["petl_config"] = cfg
    for k in OPTIONAL_KEYS:
        meta.setdefault(k, {} if k == "extra" else [] if k == "keep_trainable" else None)
    return (load_file(path) if tensors else {}), meta


def load_pieces(model: nn.Module, path: str, strict: bool = True, arch: Optional[str] = None) -> Dict[str, Any]:
    """Copy the tensors of piece file ``path`` into a model prepared by ``apply_petl``.

    Checked first, with errors naming the difference: same PETL structure (methods, ranks, sizes,
    targets), same backbone dimensions, ``arch`` if given, and every tensor's shape. With
    ``strict`` the file's tensor set must equal the model's trainable set. Returns the metadata.
    """
    tensors, meta = read_piece_file(path)
    model_cfg = getattr(model, "petl_config", None)
    if model_cfg is None:
        raise RuntimeError(f"load_pieces({path!r}): the model has no PETL pieces; call apply_petl "
                           f"with the file's config first (methods {meta['methods']})")
    diff = [f"{f}: file {getattr(meta['petl_config'], f)!r} vs model {getattr(model_cfg, f)!r}"
            for f in STRUCTURAL_FIELDS if getattr(meta["petl_config"], f) != getattr(model_cfg, f)]
    if diff:
        raise ValueError(f"{path}: made for another PETL setup ({meta['methods']} vs "
                         f"{active_methods(model_cfg)}): " + "; ".join(diff))
    if arch is not None and meta["arch"] is not None and meta["arch"] != arch:
        raise ValueError(f"{path}: made for arch {meta['arch']!r}, loading into {arch!r}")
    here = backbone_signature(model)
    file_kind = meta["backbone"].get("kind", "ofa")  # files written before bodies existed: OFA's
    if file_kind != here["kind"]:
        def show(sig):
            return ", ".join(f"{k}={v}" for k, v in sig.items() if k not in ("kind", "digest"))

        raise ValueError(f"{path}: pieces of body {file_kind!r} ({show(meta['backbone'])}) cannot load onto "
                         f"body {here['kind']!r} ({show(here)})")
    dims = [f"{k}: file {v} vs model {here.get(k)}" for k, v in meta["backbone"].items()
            if k != "digest" and here.get(k) != v]
    if dims:
        raise ValueError(f"{path}: made for another backbone (arch {meta['arch']!r}): " + "; ".join(dims))
    if meta["backbone"].get("digest") != here["digest"]:
        logger.warning("%s: backbone parameter names/shapes differ from the file's (same dimensions)", path)

    params = dict(model.named_parameters())
    expected = set(piece_state_dict(model))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if (missing or unexpected) and strict:
        raise ValueError(f"{path}: tensor set differs from the model's trainable set: "
                         f"missing {missing[:10]}, unexpected {unexpected[:10]}")
    if missing or unexpected:
        logger.warning("%s: missing %s, unexpected %s (strict=False)", path, missing, unexpected)
    bad = [f"{n}: file {tuple(t.shape)} vs model {tuple(params[n].shape)}"
           for n, t in tensors.items() if n in params and t.shape != params[n].shape]
    if bad:
        raise ValueError(f"{path}: shape mismatch: " + "; ".join(bad[:10]))
    unmerge_lora(model)  # the file holds unmerged LoRA factors
    with torch.no_grad():
        for n, t in tensors.items():
            if n in params:
                params[n].copy_(t.to(params[n].dtype))
    logger.info("loaded %d PETL tensors from %s (task %s)", len(tensors), path, meta["task"])
    return meta
