"""Piece files (the trainable part of a PETL run) from fairseq checkpoints, and their description.

    ofa-pieces export checkpoints/adapter/checkpoint_best.pt experts/refcoco_adapter.safetensors
    ofa-pieces info experts/refcoco_adapter.safetensors

A piece file is safetensors + JSON metadata (methods, hyper-parameters, base arch, task); it loads
onto a fresh backbone with `--petl-load PATH`, and π-Tuning reads experts from such files.
"""

import argparse
import json
import os
import sys
from typing import Optional


def load_fairseq_checkpoint(path: str, overrides: Optional[dict] = None):
    """(model, cfg, task) of one of our fairseq checkpoints, on the CPU."""
    from fairseq import checkpoint_utils

    import ofa_ext  # noqa: F401  (registrations)

    if not os.path.isfile(path):
        raise SystemExit(f"ofa-pieces: checkpoint not found: {path}")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides or {})
    return models[0], cfg, task


def export(args) -> dict:
    from ..models.petl import active_methods, save_pieces

    model, cfg, task = load_fairseq_checkpoint(args.checkpoint)
    petl_config = getattr(model, "petl_config", None)
    if petl_config is None or not active_methods(petl_config):
        raise SystemExit(f"ofa-pieces: {args.checkpoint} was trained without PETL flags; it has no pieces to export")
    task_name = args.task_name or os.path.basename(os.path.normpath(str(cfg.task.data or "")))
    saved = save_pieces(model, args.out, arch=cfg.model._name, task=task_name,
                        extra={"source_checkpoint": os.path.abspath(args.checkpoint)})
    info = {"pieces": args.out, "tensors": len(saved), "params": sum(t.numel() for t in saved.values()),
            "bytes": os.path.getsize(args.out), "task": task_name, "arch": cfg.model._name}
    print(json.dumps(info))
    return info


def info(args) -> dict:
    from ..models.petl import read_piece_file

    tensors, meta = read_piece_file(args.pieces)
    summary = {k: v for k, v in meta.items() if k != "petl_config"}
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
    i = sub.add_parser("info", help="describe a piece file")
    i.add_argument("pieces")
    i.set_defaults(func=info)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
