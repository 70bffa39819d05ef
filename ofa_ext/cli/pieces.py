"""Piece files (the trainable part of a PETL run) from fairseq checkpoints, and their description.

    ofa-pieces export checkpoints/adapter/checkpoint_best.pt experts/refcoco_adapter.safetensors
    ofa-pieces info experts/refcoco_adapter.safetensors
    ofa-pieces collapse checkpoints/interpolation/checkpoint_best.pt experts/refcocog_pi.safetensors

A piece file is safetensors + JSON metadata (methods, hyper-parameters, base arch, task); it loads
onto a fresh backbone with `--petl-load PATH`, and π-Tuning reads experts from such files.
`collapse` turns an expert-interpolation checkpoint (`--interpolation-experts`) into one ordinary
piece file with the mix's outputs, so inference costs one expert: mixed adapters / biases
Σ_k w_k θ_k, a LoRA of rank K·r for π-Tuning's LoRA mix Σ_k w_k B_k A_k, one prefix table per stack
(no projection) for its per-layer prefix mix. The learned mix (experts, logits) is recorded under
`extra.expert_mix`; the file's `petl_config` is the collapsed one, so `--petl-load` rebuilds it.
"""

import argparse
import json
import os
import sys
from typing import Optional

from ..utils.checkpoints import load_fairseq_checkpoint
from ..utils.errors import cli_entry
from ..utils.options import parse_json_dict


def _petl_model(path: str, overrides: Optional[str] = None):
    """(model, cfg) of a PETL checkpoint; exits when it has no pieces."""
    from ..models.petl import active_methods

    model, cfg, _ = load_fairseq_checkpoint(path, parse_json_dict(overrides, "--model-overrides"), what="checkpoint")
    petl_config = getattr(model, "petl_config", None)
    if petl_config is None or not active_methods(petl_config):
        raise SystemExit(f"ofa-pieces: {path} was trained without PETL flags; it has no pieces to export")
    return model, cfg


def _write(model, cfg, args, extra: dict) -> dict:
    from ..models.petl import save_pieces

    task_name = args.task_name or os.path.basename(os.path.normpath(str(cfg.task.data or "")))
    saved = save_pieces(model, args.out, arch=cfg.model._name, task=task_name,
                        extra={"source_checkpoint": os.path.abspath(args.checkpoint), **extra})
    info = {"pieces": args.out, "tensors": len(saved), "params": sum(t.numel() for t in saved.values()),
            "bytes": os.path.getsize(args.out), "task": task_name, "arch": cfg.model._name}
    return info


def export(args) -> dict:
    from ..models.interpolation import MIX_ATTR

    model, cfg = _petl_model(args.checkpoint)
    if getattr(model, MIX_ATTR, None) is not None:
        raise SystemExit(f"ofa-pieces: {args.checkpoint} is an expert-interpolation checkpoint; "
                         f"use `ofa-pieces collapse {args.checkpoint} OUT.safetensors`")
    info = _write(model, cfg, args, {})
    print(json.dumps(info))
    return info


def collapse(args) -> dict:
    """One piece file from an interpolation checkpoint: every piece = its learned mix of the experts."""
    import dataclasses

    from ..models.interpolation import MIX_ATTR, current_mix, unload_interpolation
    from ..models.interpolation_options import mean_mix_weights
    from ..models.petl import active_methods

    model, cfg = _petl_model(args.checkpoint, args.model_overrides)
    if getattr(model, MIX_ATTR, None) is None:
        raise SystemExit(f"ofa-pieces: {args.checkpoint} has no expert interpolation "
                         "(trained without --interpolation-experts); use `ofa-pieces export`")
    mix = current_mix(model)
    weights = mean_mix_weights(model)
    rebuilt = bool(getattr(model, "absent_experts", None))
    unload_interpolation(model)
    info = _write(model, cfg, args, {"expert_mix": dataclasses.asdict(mix), "mix_weights": weights,
                                     "experts_rebuilt_without_files": rebuilt})
    info.update(experts=mix.experts, weights=[round(w, 6) for w in weights], mixing=mix.mixing,
                methods=active_methods(model.petl_config))
    if model.petl_config.lora:
        info.update(lora_r=model.petl_config.lora_r, lora_alpha=model.petl_config.lora_alpha)
    print(json.dumps(info))
    return info


# option prefixes of each method (PETLConfig field names)
METHOD_PREFIXES = {"adapter": ("adapter_",), "prefix": ("encoder_prompt", "decoder_prompt", "prompt_"),
                   "lora": ("lora_",), "bitfit": ("bitfit_",)}


def petl_hyper_parameters(petl_config) -> dict:
    """The options of the methods a piece file holds (e.g. adapter_dim, lora_r), plus the opt-ins set."""
    from ..models.petl.config import active_methods, petl_config_to_dict

    values = petl_config_to_dict(petl_config)
    prefixes = tuple(p for m in active_methods(petl_config) for p in METHOD_PREFIXES.get(m, ()))
    chosen = {k: v for k, v in values.items() if k.startswith(prefixes)}
    chosen.update({k: True for k in ("train_layernorm", "train_head", "freeze_resnet") if values.get(k)})
    if "prefix" in active_methods(petl_config):  # only the side(s) that have prefixes
        chosen = {k: v for k, v in chosen.items()
                  if not (k.startswith("encoder_prompt_") and not values["encoder_prompt"])
                  and not (k.startswith("decoder_prompt_") and not values["decoder_prompt"])}
    return chosen


def info(args) -> dict:
    from ..models.petl import read_piece_file

    tensors, meta = read_piece_file(args.pieces)
    summary = {k: v for k, v in meta.items() if k != "petl_config"}
    summary["hyper_parameters"] = petl_hyper_parameters(meta["petl_config"])  # e.g. adapter_dim, lora_r
    summary["params"] = sum(t.numel() for t in tensors.values())
    summary["tensors"] = len(tensors)
    print(json.dumps(summary, indent=2, default=str))
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofa-pieces", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write the PETL pieces of a fairseq checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("out", help="output .safetensors file")
    e.add_argument("--task-name", help="task recorded in the file (default: the data folder's name)")
    e.set_defaults(func=export)
    c = sub.add_parser("collapse", help="one piece file from an expert-interpolation checkpoint (the mixed pieces)")
    c.add_argument("checkpoint")
    c.add_argument("out", help="output .safetensors file")
    c.add_argument("--task-name", help="task recorded in the file (default: the data folder's name)")
    c.add_argument("--model-overrides", default="{}",
                   help="JSON object of stored model options to override, e.g. '{\"interpolation_mixing\": "
                        "\"parameters\"}' for a checkpoint written before that option")
    c.set_defaults(func=collapse)
    i = sub.add_parser("info", help="describe a piece file")
    i.add_argument("pieces")
    i.set_defaults(func=info)
    return p


@cli_entry("ofa-pieces")
def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
