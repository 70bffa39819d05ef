"""``ofa-extract-features``: cache image (or document) features and class-name text features.

    ofa-extract-features --body hf:/models/clip --data data/pets --classnames data/pets/classes.txt \
        --templates hand_crafted --dataset-name pets --out features/pets

(or ``--body ofa:ckpt/checkpoint_best.pt``: the OFA encoder, its vocabulary from the checkpoint or
``--bpe-dir`` / ``--spm-model``) writes ``features/pets/{train,valid,test}.image.safetensors``
(train: the centre crop and its flipped copy, ``--train-views``; valid/test: the centre crop) and
``classes.safetensors`` (one row per class × template). Each file's header names the body, layer, split, views/templates and counts
(``data/features.py``). Re-running with the same inputs and options reuses every file whose cache
key matches; a folder made by another body or layer is refused unless ``--overwrite``. Every
sample is extracted: the header's ``n_samples`` equals the split's count, or the run fails.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..data.features import (CLASS_TABLE, FeatureCacheError, FeatureTable, cache_key, check_same_body, read_header,
                             table_path, write_table)
from ..data.xmodal_sources import CoOpTransform, SampleSourceError, check_labels, read_classnames, read_split
from ..data.xmodal_templates import TEMPLATE_SETS, class_texts, templates

logger = logging.getLogger("ofa_ext.extract_features")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ofa-extract-features", description=__doc__.split("\n\n")[0])
    p.add_argument("--body", required=True, help="'hf:DIR' of a CLIP model (both towers), 'ofa:PATH.pt' (the OFA "
                   "encoder on image-only and text-only inputs) or a text body ('minilm')")
    p.add_argument("--bpe-dir", default=None, help="ofa: body: OFA's GPT-2 BPE folder (dict.txt, encoder.json, "
                   "vocab.bpe); default: the one the checkpoint names")
    p.add_argument("--spm-model", default=None, help="ofa: body: its sentencepiece .model; default: the one the "
                   "checkpoint names")
    p.add_argument("--data", required=True, help="ROOT with {split}/<label>/ image folders, {split}.tsv "
                   "(id, label, base64 image) or {split}.npz text samples")
    p.add_argument("--classnames", required=True, help="one class per line in label order: label[<TAB>name]")
    p.add_argument("--out", required=True, help="folder of the feature files")
    p.add_argument("--splits", default="train,valid,test", help="comma-separated splits to extract")
    p.add_argument("--templates", default="hand_crafted", choices=TEMPLATE_SETS, help="text template set")
    p.add_argument("--dataset-name", default=None, help="hand_crafted templates of this dataset (imagenet, pets, ...)")
    p.add_argument("--template", action="append", default=None,
                   help="your own template(s) with '{}' for the class name (replaces --templates)")
    p.add_argument("--train-views", default="center,flip", help="image views of the train split (released: +flip)")
    p.add_argument("--image-size", type=int, default=0, help="crop size; 0 = the vision tower's image_size "
                   "(OFA: the checkpoint's patch_image_size)")
    p.add_argument("--layer", type=int, default=0, help="0 = final features; k >= 1 = the samples' hidden states at "
                   "the input of the last k blocks, for --head partial (class-name texts stay final features)")
    p.add_argument("--cache-dtype", default="float16", choices=("float16", "float32"),
                   help="dtype of the layer-k hidden states (a sequence per sample; float16 halves the cache)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding images")
    p.add_argument("--overwrite", action="store_true", help="replace files made by another body or layer")
    return p


class _Images(torch.utils.data.Dataset):
    def __init__(self, split, transform: CoOpTransform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.transform(self.split.load(i)), i


def _pad_cat(chunks: List[torch.Tensor], masks: List[Optional[torch.Tensor]]):
    """Concatenate (B, T_i, d) chunks padded to the longest T (True = pad in the mask); 2-D chunks as is."""
    if chunks[0].dim() == 2:
        return torch.cat(chunks), None
    t = max(c.shape[1] for c in chunks)
    out = torch.cat([torch.nn.functional.pad(c, (0, 0, 0, t - c.shape[1])) for c in chunks])
    if all(m is None for m in masks):
        return out, None
    full = [torch.zeros(c.shape[:2], dtype=torch.bool) if m is None else m for c, m in zip(chunks, masks)]
    return out, torch.cat([torch.nn.functional.pad(m, (0, t - m.shape[1]), value=True) for m in full])


def _extract_split(encoder, split, views: List[str], size: int, batch_size: int, workers: int):
    """(features, padding, index, view) of every sample; the caller checks the counts."""
    feats, masks, index, view = [], [], [], []
    if split.kind == "image":
        transform = CoOpTransform(size, views, encoder.mean_std)  # the body's mean/std (CLIP's, OFA's 0.5)
        loader = torch.utils.data.DataLoader(_Images(split, transform), batch_size=batch_size,
                                             num_workers=workers, shuffle=False)
        for x, idx in loader:  # x: [B, V, 3, s, s] -> rows sample-major, view-minor
            b, v = x.shape[:2]
            feats.append(encoder.encode_images(x.flatten(0, 1)))
            masks.append(None)
            index.append(idx.repeat_interleave(v))
            view.append(torch.arange(v).repeat(b))
    else:
        for start in range(0, len(split), batch_size):
            texts = [split.load(i) for i in range(start, min(start + batch_size, len(split)))]
            f, m = encoder.encode_text_samples(texts)
            feats.append(f)
            masks.append(m)
            index.append(torch.arange(start, start + len(texts)))
            view.append(torch.zeros(len(texts), dtype=torch.long))
    features, padding = _pad_cat(feats, masks)
    return features, padding, torch.cat(index), torch.cat(view)


def _reuse(path: Path, identity: Dict, key: str, overwrite: bool) -> bool:
    if not path.is_file():
        return False
    header = read_header(path)
    if not overwrite:
        check_same_body(path, header, identity["body"], identity["layer"], identity["signature"])
    return header.get("cache_key") == key


def run(args: argparse.Namespace, encoder=None) -> Dict[str, Dict]:
    """Extract (or reuse) every table; returns {table: {"path", "rows", "cached", "seconds"}}."""
    from ..models.crossmodal.adaptation_encoders import feature_encoder

    labels, names = read_classnames(args.classnames)
    template_list = args.template or templates(args.templates, args.dataset_name)
    if any("{}" not in t for t in template_list):
        raise ValueError(f"--template: every template needs '{{}}' for the class name, got {template_list}")
    encoder = encoder or feature_encoder(args.body, args.layer, bpe_dir=args.bpe_dir, spm_model=args.spm_model,
                                         cache_dtype=getattr(torch, args.cache_dtype))
    identity = encoder.identity()
    out = Path(args.out)
    common = {**identity, "classnames": labels, "names": names}
    report = {}

    texts, text_labels, template_ids = class_texts(names, template_list)
    path = table_path(out, CLASS_TABLE, "text")
    key = cache_key(identity, {"texts": texts}, [Path(args.classnames)])
    report[CLASS_TABLE] = _one(path, key, identity, args.overwrite, lambda: FeatureTable(
        encoder.encode_texts(texts), torch.tensor(text_labels), torch.tensor(text_labels), torch.tensor(template_ids),
        {**common, "stream": "text", "split": CLASS_TABLE, "templates": template_list, "n_samples": len(labels),
         "cached_at": "final", "cache_key": key}))

    for name in [s for s in args.splits.split(",") if s]:
        split = read_split(args.data, name)
        check_labels(split, labels, args.classnames, f"{args.data} split {name!r}", all_classes=(name == "train"))
        if split.kind not in encoder.kinds:
            raise ValueError(f"--body {args.body}: cannot encode the {split.kind} samples of split {name!r}")
        views = args.train_views.split(",") if (name == "train" and split.kind == "image") else ["center"]
        size = args.image_size or encoder.image_size or 0
        if split.kind == "image" and size <= 0:
            raise ValueError(f"--image-size: --body {args.body} names no image size (a random OFA arch); give one")
        options = {"views": views, "size": size, "kind": split.kind}
        path = table_path(out, name, split.kind)
        key = cache_key(identity, options, split.files)

        def make(split=split, views=views, size=size, key=key, name=name):
            feats, padding, index, view = _extract_split(encoder, split, views, size, args.batch_size, args.workers)
            expected = len(split) * len(views)
            if len(feats) != expected or sorted(set(index.tolist())) != list(range(len(split))):
                raise RuntimeError(f"split {name!r}: {len(feats)} feature rows for {len(split)} samples × "
                                   f"{len(views)} views = {expected}")
            y = torch.tensor([labels.index(lab) for lab in split.labels])[index]
            return FeatureTable(feats, y, index, view, {
                **common, "stream": split.kind, "split": name, "views": views, "image_size": size,
                "n_samples": len(split), "sample_body": encoder.sample_body(split.kind)[1],
                "cached_at": f"input of the last {encoder.layer} blocks" if encoder.layer else "final",
                "cache_key": key}, padding)
        report[name] = _one(path, key, identity, args.overwrite, make)
    return report


def _one(path: Path, key: str, identity: Dict, overwrite: bool, make) -> Dict:
    start = time.perf_counter()
    if _reuse(path, identity, key, overwrite):
        return {"path": str(path), "rows": read_header(path)["rows"], "cached": True, "seconds": 0.0}
    table = make()
    write_table(path, table)
    return {"path": str(path), "rows": len(table), "cached": False, "seconds": time.perf_counter() - start}


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (SampleSourceError, FeatureCacheError, ValueError, FileNotFoundError) as e:
        sys.exit(f"ofa-extract-features: {e}")
    for name, r in report.items():
        print(f"{name}: {r['rows']} rows {'reused from cache' if r['cached'] else 'extracted'} -> {r['path']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
