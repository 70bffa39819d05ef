"""Labelled samples for cross-modal few-shot adaptation: where they come from and how images are cut.

One split of samples is read from
* an **image folder per class**: ``ROOT/{split}/{label}/*.png|jpg|jpeg|bmp|webp`` (sorted names);
* a **TSV** like the grounding files: ``ROOT/{split}.tsv`` with rows ``id <TAB> label <TAB> base64 image``;
* a **text ``.npz``** of ``ofa-make-array-data`` (``x`` strings, ``y`` ids, ``meta.json``
  ``class_names``): documents as samples, for the text-only mechanics check.

The class-name file lists one class per line in label order: ``label`` or ``label <TAB> name for
the templates``; the labels must be exactly the data's labels. Images follow CoOp's test
transform (shorter side → ``size`` bicubic, centre crop, CLIP mean/std); the ``flip`` view is the
centre crop mirrored (p = 1), as the released scripts' one extra view.
"""

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .transforms import decode_image_b64, to_normalised_tensor

CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIEWS = ("center", "flip")


class SampleSourceError(ValueError):
    """A sample folder, TSV or class-name file that does not fit; the message names the file."""


@dataclass
class SampleSplit:
    """The samples of one split: ``kind`` "image" or "text", their ids and label names, and a loader."""

    kind: str
    ids: List[str]
    labels: List[str]
    load: Callable[[int], Union[Image.Image, str]]
    files: List[Path]  # what the split was read from (the cache key fingerprints them)

    def __len__(self) -> int:
        return len(self.ids)


def read_classnames(path: Union[str, Path]) -> Tuple[List[str], List[str]]:
    """(labels, template names) from a class-name file; underscores stay (templates replace them)."""
    path = Path(path)
    if not path.is_file():
        raise SampleSourceError(f"--classnames {path}: no such file (one class per line: label[<TAB>name])")
    labels, names = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        label, _, name = line.rstrip("\n").partition("\t")
        label = label.strip()
        if label in labels:
            raise SampleSourceError(f"{path}:{n}: class {label!r} is listed twice")
        labels.append(label)
        names.append(name.strip() or label)
    if len(labels) < 2:
        raise SampleSourceError(f"{path}: at least 2 classes expected, found {len(labels)}")
    return labels, names


def check_labels(split: SampleSplit, classes: Sequence[str], classnames_file: Union[str, Path], where: str,
                 all_classes: bool) -> None:
    """The data's labels must be the file's classes (``all_classes``: every class present)."""
    seen = set(split.labels)
    unknown = sorted(seen - set(classes))
    missing = sorted(set(classes) - seen) if all_classes else []
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"labels not in the file: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        if missing:
            parts.append(f"classes without samples: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        raise SampleSourceError(f"--classnames {classnames_file}: its classes differ from the labels of {where} "
                                f"({'; '.join(parts)})")


def _image_folder(root: Path) -> SampleSplit:
    files, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(class_dir.name)
    if not files:
        raise SampleSourceError(f"{root}: no images found (expected {root}/<label>/*.png|jpg)")

    def load(i: int) -> Image.Image:
        with Image.open(files[i]) as im:
            return im.convert("RGB")

    return SampleSplit("image", [f"{f.parent.name}/{f.name}" for f in files], labels, load, files)


def _image_tsv(path: Path) -> SampleSplit:
    csv.field_size_limit(sys.maxsize)
    ids, labels, images = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) != 3:
                raise SampleSourceError(f"{path}:{n}: 3 columns expected (id, label, base64 image), got {len(row)}")
            ids.append(row[0])
            labels.append(row[1])
            images.append(row[2])

    def load(i: int) -> Image.Image:
        try:
            return decode_image_b64(images[i])
        except ValueError as e:
            raise SampleSourceError(f"{path}:{i + 1}: {e}") from None

    return SampleSplit("image", ids, labels, load, [path])


def _text_npz(path: Path) -> SampleSplit:
    meta_path = path.parent / "meta.json"
    names = json.loads(meta_path.read_text()).get("class_names") if meta_path.is_file() else None
    if not names:
        raise SampleSourceError(f"{meta_path}: class_names expected beside {path.name} (ofa-make-array-data writes it)")
    with np.load(path, allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    if x.dtype.kind != "U":
        raise SampleSourceError(f"{path}: 'x' must hold strings for text samples, got {x.dtype}")
    texts = [str(t) for t in x.tolist()]
    return SampleSplit("text", [str(i) for i in range(len(texts))], [names[int(v)] for v in y.tolist()],
                       texts.__getitem__, [path, meta_path])


def read_split(root: Union[str, Path], split: str) -> SampleSplit:
    """Split ``split`` under ``root``: a class-folder tree, ``{split}.tsv`` or ``{split}.npz``."""
    root = Path(root)
    if (root / split).is_dir():
        return _image_folder(root / split)
    if (root / f"{split}.tsv").is_file():
        return _image_tsv(root / f"{split}.tsv")
    if (root / f"{split}.npz").is_file():
        return _text_npz(root / f"{split}.npz")
    raise SampleSourceError(f"--data {root}: no split {split!r} (expected {split}/<label>/ image folders, "
                            f"{split}.tsv or {split}.npz)")


class CoOpTransform:
    """Image → ``[V, 3, s, s]``: the centre crop (and its mirror for ``views=("center", "flip")``)."""

    def __init__(self, size: int, views: Sequence[str] = ("center",),
                 mean_std: Tuple[Sequence[float], Sequence[float]] = CLIP_MEAN_STD):
        bad = [v for v in views if v not in VIEWS]
        if bad or not views or views[0] != "center":
            raise ValueError(f"views must start with 'center' and be among {VIEWS}, got {tuple(views)}")
        self.size, self.views, (self.mean, self.std) = size, tuple(views), mean_std

    def crop(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        x = to_normalised_tensor(self.crop(image), self.mean, self.std)  # [3, s, s]
        out = [x if v == "center" else x.flip(-1) for v in self.views]
        return torch.stack(out)  # [V, 3, s, s]
