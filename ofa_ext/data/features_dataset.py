"""Datasets over cached feature rows and the two-stream batches of cross-modal adaptation.

Training batches follow Lin et al.'s ``train.py``: each step takes ``⌊B·r⌋`` rows of the text
table and ``B − ⌊B·r⌋`` image rows (``r = --text-batch-ratio``, 0.5 released), each stream from
its own shuffled order with ``drop_last`` and re-shuffled when exhausted. The orders are a pure
function of (seed, stream, pass), so any epoch's batches can be rebuilt without state and every
rank gets the same list before fairseq deals batches out to ranks.
"""

from typing import Any, Dict, List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset


class FeatureRows(FairseqDataset):
    """Rows with labels; the first ``n_text`` rows come from the class-name table.

    ``features`` holds every row as a vector ``(N, D)``; or, for partial fine-tuning, only the
    ``n_text`` text rows, the sample rows being ``tokens`` ``(N − n_text, T, d)`` hidden states
    (``padding`` ``(N − n_text, T)`` for text samples). A batch is gathered in one step
    (``__getitems__``, which torch's DataLoader calls with the whole index list) and holds its text
    rows first, so the criterion takes the halves as slices.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, n_text: int = 0,
                 tokens: Optional[torch.Tensor] = None, padding: Optional[torch.Tensor] = None):
        self.features, self.labels, self.n_text = features.float(), labels.long(), int(n_text)
        self.tokens, self.padding = tokens, padding

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices) -> Dict[str, Any]:
        return self.collater(indices)

    def collater(self, samples) -> Dict[str, Any]:
        if isinstance(samples, dict) or len(samples) == 0:  # already gathered by __getitems__, or empty
            return samples if isinstance(samples, dict) else {}
        idx = torch.as_tensor(np.asarray(samples, dtype=np.int64))
        n_text = 0
        if self.n_text:
            text = idx < self.n_text
            n_text = int(text.sum())
            if n_text and not bool(text[:n_text].all()):  # text rows first
                idx = torch.cat([idx[text], idx[~text]])
        if self.tokens is None:
            net_input = {"features": self.features[idx]}
        else:
            rows = idx[n_text:] - self.n_text
            net_input = {"features": self.features[idx[:n_text]], "tokens": self.tokens[rows],
                         "padding": None if self.padding is None else self.padding[rows]}
        return {"id": idx, "net_input": net_input, "target": self.labels[idx], "n_text": n_text,
                "nsentences": len(idx), "ntokens": len(idx)}

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
