"""Parameter-efficient tuning (PETL) for OFA and every body: adapters, prefixes, LoRA, BitFit, input prompts.

Public API (names as PEFT where they fit; ``ofa_ext.api`` wraps it with body loading)::

    model = apply_petl(model, cfg)              # inject + freeze + log; cfg: PETLConfig or model cfg
    model = apply_petl(net, cfg, keep_trainable=("embedder", "head"))  # modules training beside a body
    trainable_summary(model)                    # {"trainable", "total", "percent"}
    save_pieces(model, path, cfg, arch, task)   # safetensors of the trainable tensors + metadata
    load_pieces(model, path)                    # onto a model prepared by apply_petl
    read_piece_file(path)                       # (tensors, meta) without a model
    merge_lora(model) / unmerge_lora(model) / merge_and_unload(model)
"""

from .config import PETLConfig, active_methods, as_petl_config
from .inject import SITES, apply_petl, trainable_summary, validate
from .sites import match_site
from .lora import merge_and_unload, merge_lora, unmerge_lora
from .pieces import backbone_signature, load_pieces, piece_state_dict, read_piece_file, save_pieces

__all__ = [
    "PETLConfig", "SITES", "active_methods", "apply_petl", "as_petl_config", "backbone_signature",
    "load_pieces", "merge_and_unload", "merge_lora", "piece_state_dict", "read_piece_file",
    "save_pieces", "trainable_summary", "unmerge_lora", "validate",
]
