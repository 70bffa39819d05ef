#!/usr/bin/env python
"""Do a body's cached image features carry the classes? A full-data linear probe on a feature folder.

    python run_scripts/xmodal/probe.py results/demo/work/xmodal/objects_ofa_features [more folders]

Logistic regression (scikit-learn, standardised features) on *every* train row of
``train.image.safetensors`` (all samples and views, not a few-shot draw), scored on
``test.image.safetensors``: an upper reference for what a linear head on these features can reach,
independent of the few-shot protocol, the text rows and the training schedule. One JSON line per
folder: ``{"features", "train_rows", "classes", "test_accuracy", "chance"}`` (accuracies in %).
"""

import argparse
import json
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def probe(folder: Path) -> dict:
    from ofa_ext.data.features import read_table

    train, test = (read_table(folder / f"{s}.image.safetensors") for s in ("train", "test"))
    scale = StandardScaler().fit(train.features.numpy())
    clf = LogisticRegression(max_iter=3000).fit(scale.transform(train.features.numpy()), train.labels.numpy())
    n_classes = len(train.header["classnames"])
    acc = clf.score(scale.transform(test.features.numpy()), test.labels.numpy())
    return {"features": str(folder), "train_rows": len(train), "classes": n_classes,
            "test_accuracy": round(100 * acc, 2), "chance": round(100 / n_classes, 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("features", nargs="+", type=Path, help="folders written by ofa-extract-features")
    for folder in p.parse_args(argv).features:
        print(json.dumps(probe(folder)))


if __name__ == "__main__":
    main()
