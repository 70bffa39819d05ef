"""Datasets over cached feature rows and the two-stream batches of cross-modal adaptation.

Training batches follow Lin et al.'s ``train.py``: each step takes ``⌊B·r⌋`` rows of the text
table and ``B − ⌊B·r⌋`` image rows (``r = --text-batch-ratio``, 0.5 released), each stream from
its own shuffled order with ``drop_last`` and re-shuffled when exhausted. The orders are a pure
function of (seed, stream, pass), so any epoch's batches can be rebuilt without state and every
rank gets the same list before fairseq deals batches out to ranks.
"""

from typing import Any, Dict, List

import numpy as np
import torch
from fairseq.data import FairseqDataset


class FeatureRows(FairseqDataset):
    """Rows of features with labels; ``is_text`` marks the rows from the class-name table."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, is_text: torch.Tensor):
        self.features, self.labels, self.is_text = features.float(), labels.long(), is_text.bool()

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int) -> int:
        return index

    def collater(self, samples: List[int]) -> Dict[str, Any]:
        if not samples:
            return {}
        idx = torch.tensor(samples, dtype=torch.long)
        return {"id": idx, "net_input": {"features": self.features[idx]}, "target": self.labels[idx],
                "is_text": self.is_text[idx], "nsentences": len(samples), "ntokens": len(samples)}

    @property
    def sizes(self) -> np.ndarray:
        return np.ones(len(self), dtype=np.int64)

    def num_tokens(self, index: int) -> int:
        return 1

    def size(self, index: int) -> int:
        return 1

    def ordered_indices(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64)


def split_batch(batch_size: int, ratio: float) -> tuple:
    """(text rows, image rows) of one batch: ``⌊B·r⌋`` and the rest."""
    text = int(batch_size * ratio)
    return text, batch_size - text


def _stream(n: int, half: int, seed: int, stream: int, steps: range) -> List[np.ndarray]:
    """Rows of ``half`` per step from passes over ``n`` rows (shuffled per pass, drop_last)."""
    per_pass = n // half
    out, cache = [], {}
    for k in steps:
        p, pos = divmod(k, per_pass)
        if p not in cache:
            cache[p] = np.random.default_rng([seed, stream, p]).permutation(n)
        out.append(cache[p][pos * half:(pos + 1) * half])
    return out


def two_stream_batches(n_text: int, n_image: int, text_half: int, image_half: int, seed: int, epoch: int,
                       steps: int) -> List[np.ndarray]:
    """The ``steps`` batches of ``epoch`` (1-based) over rows ``[text (n_text) | image (n_image)]``."""
    rng = range((epoch - 1) * steps, epoch * steps)
    image = _stream(n_image, image_half, seed, 1, rng)
    if text_half == 0:
        return [n_text + b for b in image]
    text = _stream(n_text, text_half, seed, 0, rng)
    return [np.concatenate([t, n_text + b]) for t, b in zip(text, image)]
