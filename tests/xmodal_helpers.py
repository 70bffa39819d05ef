"""Small fixtures for the cross-modal adaptation tests: a tiny CLIP folder with a tokenizer, images,
and feature tables written directly (no extraction) for the training tests."""

import os
from pathlib import Path

import torch

from ofa_ext.data.features import CLASS_TABLE, FeatureTable, table_path, write_table


def tiny_clip_folder(root, seed: int = 0, layers: int = 1) -> str:
    """A random tiny CLIPModel + word tokenizer, saved as a user's checkpoint folder would be."""
    from ofa_ext.models.crossmodal.adaptation_miniature import save_word_tokenizer, tiny_clip, vocabulary

    path = os.path.join(str(root), "clip" if layers == 1 else f"clip{layers}")
    if not os.path.isdir(path):
        torch.manual_seed(seed)
        tiny_clip(len(vocabulary()), image_size=16, width=32, layers=layers).save_pretrained(path)
        save_word_tokenizer(path, vocabulary(), 16)
    return path


def image_folders(root, classes=("red_circle", "blue_square", "green_triangle"), counts=(3, 2, 2), size=(20, 14)):
    """ROOT/{train,valid,test}/<class>/*.png of solid-ish random images (non-square: the crop matters)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    root = Path(root)
    for split, n in zip(("train", "valid", "test"), counts):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")
    (root / "classes.txt").write_text("".join(f"{c}\t{c.replace('_', ' ')}\n" for c in classes))
    return root


def write_features(folder, n_classes=3, width=8, per_class=(6, 4, 5), templates=2, views=2, seed=0,
                   body="test-body", noise=0.3):
    """Gaussian class clusters as cached tables (text rows = the class means + noise)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, width, generator=g)
    names = [f"class{c}" for c in range(n_classes)]
    common = {"body": body, "layer": 0, "signature": {"w": width}, "classnames": names, "names": names}
    y = torch.arange(n_classes).repeat_interleave(templates)
    t = FeatureTable(means[y] + noise * torch.randn(len(y), width, generator=g), y, y,
                     torch.arange(templates).repeat(n_classes), {**common, "stream": "text", "split": CLASS_TABLE})
    write_table(table_path(folder, CLASS_TABLE, "text"), t)
    for split, n in zip(("train", "valid", "test"), per_class):
        v = views if split == "train" else 1
        labels = torch.arange(n_classes).repeat_interleave(n)  # sample s has label labels[s]
        index = torch.arange(len(labels)).repeat_interleave(v)
        feats = means[labels[index]] + noise * 3 * torch.randn(len(index), width, generator=g)
        write_table(table_path(folder, split, "image"), FeatureTable(
            feats, labels[index], index, torch.arange(v).repeat(len(labels)),
            {**common, "stream": "image", "split": split, "n_samples": len(labels)}))
    return Path(folder)


def text_samples(root, classes=("red circle", "blue square"), per_split=(3, 2, 2)):
    """ROOT/{train,valid,test}.npz text samples of different lengths (padding matters) + meta.json."""
    import json

    import numpy as np

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    words = ["small", "big", "a", "the", "photo", "of"]
    for split, n in zip(("train", "valid", "test"), per_split):
        x, y = [], []
        for c, name in enumerate(classes):
            for i in range(n):
                x.append(" ".join([name] + words[:(i * 2 + c) % len(words)]))
                y.append(c)
        np.savez(root / f"{split}.npz", x=np.array(x), y=np.array(y))
    (root / "meta.json").write_text(json.dumps({"class_names": [c.replace(" ", "_") for c in classes]}))
    (root / "classes.txt").write_text("".join(f"{c.replace(' ', '_')}\t{c}\n" for c in classes))
    return root
