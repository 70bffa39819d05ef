"""Cached feature tables of cross-modal adaptation: safetensors files with a self-describing header.

A table holds ``features`` ``(N, D)`` float32, ``labels`` ``(N,)``, ``index`` ``(N,)`` (the sample,
or for text the class, each row comes from) and ``view`` ``(N,)`` (image view id, text template id).
Partial fine-tuning (layer ``k >= 1``) caches sample tables as ``(N, T, d)`` hidden states in the
extraction's cache dtype (float16 by default), with ``padding`` ``(N, T)`` bool (True = pad) for
text samples; the header's ``cached_at`` says which (``final`` or ``input of the last k blocks``).
Its header (safetensors metadata, JSON strings) names the body, its shape signature, the layer
index, the stream (image / text), the split, the views or templates, the class names, the row
and sample counts, and ``cache_key`` (a hash of the inputs and options): re-running the extraction
with the same key reuses the file. Files:  ``DIR/{split}.image.safetensors`` (or ``.text`` for
document samples) and ``DIR/classes.safetensors`` (one row per class × template).
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils.files import atomic_path

FORMAT = "ofa_ext.xmodal_features/1"
CLASS_TABLE = "classes"
PathLike = Union[str, Path]


class FeatureCacheError(ValueError):
    """A feature file that does not fit what reads it; the message names the file."""


@dataclass
class FeatureTable:
    features: torch.Tensor  # (N, D) float32
    labels: torch.Tensor  # (N,) long
    index: torch.Tensor  # (N,) long: sample (or class) of each row
    view: torch.Tensor  # (N,) long: image view / template id
    header: Dict[str, Any]
    padding: Optional[torch.Tensor] = None  # (N, T) bool, True = pad: text samples cached at layer k >= 1

    def __len__(self) -> int:
        return int(self.features.shape[0])


def table_path(folder: PathLike, split: str, stream: str) -> Path:
    return Path(folder) / (f"{CLASS_TABLE}.safetensors" if split == CLASS_TABLE else f"{split}.{stream}.safetensors")


def cache_key(identity: Dict[str, Any], options: Dict[str, Any], files: Sequence[Path]) -> str:
    """sha256 over the body identity, the options and each input file's path, size and mtime."""
    stats = [(str(Path(f).resolve()), Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files]
    blob = json.dumps({"identity": identity, "options": options, "files": stats}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_table(path: PathLike, table: FeatureTable) -> None:
    n = len(table)
    for name in ("labels", "index", "view"):
        if getattr(table, name).shape != (n,):
            raise ValueError(f"{path}: {name} must have {n} rows, got {tuple(getattr(table, name).shape)}")
    header = {"format": FORMAT, **table.header, "rows": n, "width": int(table.features.shape[-1])}
    if table.features.dim() == 3:
        header["tokens"] = int(table.features.shape[1])
    meta = {k: json.dumps(v) for k, v in header.items()}
    tensors = {name: getattr(table, name).clone().contiguous() for name in ("features", "labels", "index", "view")}
    if tensors["features"].dtype not in (torch.float16, torch.bfloat16):
        tensors["features"] = tensors["features"].float()
    if table.padding is not None:
        tensors["padding"] = table.padding.bool().contiguous()
    for name in ("labels", "index", "view"):
        tensors[name] = tensors[name].long()
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def read_header(path: PathLike) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FeatureCacheError(f"{path}: no such feature file (run ofa-extract-features first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise FeatureCacheError(f"{path}: not a safetensors feature file ({e})") from None
    header = {k: json.loads(v) for k, v in meta.items()}
    if header.get("format") != FORMAT:
        raise FeatureCacheError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
    return header


def read_table(path: PathLike) -> FeatureTable:
    header = read_header(path)
    with safe_open(str(path), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in ("features", "labels", "index", "view")}
        padding = f.get_tensor("padding") if "padding" in f.keys() else None
    if t["features"].shape[0] != header["rows"]:
        raise FeatureCacheError(f"{path}: header says {header['rows']} rows, the file holds {t['features'].shape[0]}")
    return FeatureTable(t["features"], t["labels"], t["index"], t["view"], header, padding)


def check_same_body(path: PathLike, header: Dict[str, Any], body: str, layer: int, signature: Any = None) -> None:
    """A cache made by another body or layer is refused, naming both."""
    theirs = (header.get("body"), header.get("layer"))
    if theirs != (body, layer) or (signature is not None and header.get("signature") != signature):
        what = "" if theirs != (body, layer) else " (same spec, different shapes: the checkpoint changed)"
        raise FeatureCacheError(f"{path}: features made by body {theirs[0]!r} layer {theirs[1]}, not body {body!r} "
                                f"layer {layer}{what}; extract into another folder or pass --overwrite")


def few_shot_rows(table: FeatureTable, shots: int, seed: int, path: PathLike, option: str = "--shots") -> torch.Tensor:
    """Rows (every view) of ``shots`` samples per class drawn with ``seed`` (CoOp's protocol)."""
    classes: List[str] = table.header["classnames"]
    g = torch.Generator().manual_seed(seed)
    labels_of = {}
    for s, y in zip(table.index.tolist(), table.labels.tolist()):
        labels_of.setdefault(s, y)
    chosen = []
    for c in range(len(classes)):
        samples = torch.tensor(sorted(s for s, y in labels_of.items() if y == c), dtype=torch.long)
        if len(samples) < shots:
            raise FeatureCacheError(f"{option} {shots}: class {classes[c]!r} has only {len(samples)} samples in {path}")
        chosen.append(samples[torch.randperm(len(samples), generator=g)[:shots]])
    keep = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)
    return torch.nonzero(torch.isin(table.index, keep)).flatten()
