"""Array datasets in the NAS-Bench-360 style: one ``{split}.npz`` per split holding ``x`` and ``y``.

``x`` is ``(N, ...)``: series ``(N, C, L)``, images ``(N, C, H, W)``, table rows ``(N, F)`` (or
ORCA's one-hot layout ``(N, W, F)``), or text ``(N,)`` strings. ``y`` is ``(N,)`` class ids,
``(N, K)`` 0/1 multi-labels, or real targets (``(N,)``, ``(N, K)``, dense ``(N, C_out, L)``).
Files are read with ``allow_pickle=False`` (a shared ``.npz`` can never run code) and checked
once when opened: missing arrays, mismatched lengths, non-finite values and labels outside
``[0, n_classes)`` each stop with one line naming the file. The whole split is held in memory
(these are small) so any sample is one index away, in the main process and in DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

PathLike = Union[str, Path]
TARGETS = ("class", "multilabel", "regression", "dense")


class ArrayFileError(ValueError):
    """An ``.npz`` that cannot be used; the message names the file and what was expected."""


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.argwhere(bad.reshape(len(bad), -1).any(axis=1))[0, 0])


def read_npz(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split file, after the structural checks of the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: array file not found (expected a .npz with arrays 'x' and 'y')")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = sorted(npz.files)
            if "x" not in keys or "y" not in keys:
                raise ArrayFileError(f"{path}: expected arrays 'x' and 'y', found {keys}")
            x, y = npz["x"], npz["y"]
    except ValueError as err:
        if isinstance(err, ArrayFileError):
            raise
        raise ArrayFileError(f"{path}: not a plain .npz of numeric/string arrays ({err})") from None
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ArrayFileError(f"{path}: 'x' {x.shape} and 'y' {y.shape} must have the same first dimension (samples)")
    if len(x) == 0:
        raise ArrayFileError(f"{path}: no samples")
    for name, arr in (("x", x), ("y", y)):
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = ~np.isfinite(arr)
            raise ArrayFileError(f"{path}: '{name}' has {int(bad.sum())} NaN/inf values (first in row "
                                 f"{_first_bad_row(bad)}); expected finite numbers")
        if arr.dtype.kind not in "biufU":
            raise ArrayFileError(f"{path}: '{name}' has dtype {arr.dtype}; expected numbers (or strings for text x)")
    return x, y


def check_targets(y: np.ndarray, target: str, n_classes: int, path: PathLike, option: str = "--num-classes") -> None:
    """Raise :class:`ArrayFileError` when ``y`` does not fit the ``target`` kind and ``n_classes``."""
    if target not in TARGETS:
        raise ValueError(f"target kind must be one of {TARGETS}, got {target!r}")
    if target == "class":
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ArrayFileError(f"{path}: class labels 'y' must be a 1-D integer array, got {y.dtype} {y.shape}")
        bad = (y < 0) | (y >= n_classes)
        if bad.any():
            row = int(np.argmax(bad))
            raise ArrayFileError(f"{path}: label {int(y[row])} in row {row} is outside [0, {n_classes}) "
                                 f"({option} {n_classes})")
    elif target == "multilabel":
        if y.ndim != 2 or y.shape[1] != n_classes or not np.isin(y, (0, 1)).all():
            raise ArrayFileError(f"{path}: multi-label 'y' must be 0/1 of shape (N, {n_classes}) ({option} "
                                 f"{n_classes}), got {y.dtype} {y.shape}")
    elif y.dtype.kind not in "iuf":
        raise ArrayFileError(f"{path}: {target} targets 'y' must be numbers, got {y.dtype}")


def channel_stats(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel (axis 1; per feature for table rows) over every other axis.

    Computed on the train split only and applied to every split, so no test statistic leaks into
    training. A constant channel gets std 1 (it is centred, not blown up).
    """
    axes = tuple(i for i in range(x.ndim) if i != 1)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    std[std < 1e-12] = 1.0
    return mean, std


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcast the per-channel stats over (N, C, ...)
    return ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)


class ArrayDataset(FairseqDataset):
    """Random-access dataset over one split's ``x``/``y`` (every sample costs one unit of batch).

    Batches: ``net_input = {"x": (B, ...) float32}`` (or ``{"text": [str]}``), ``target`` as
    ``int64`` class ids or ``float32`` values. Training order is a permutation per (seed, epoch).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, target: str = "class", shuffle: bool = False, seed: int = 1,
                 path: Optional[PathLike] = None):
        self.x, self.y, self.target = x, y, target
        self.is_text = x.dtype.kind == "U"
        self.shuffle, self.seed, self.epoch = shuffle, seed, 1
        self.path = path
        self._sizes = np.ones(len(x), dtype=np.int64)

    @classmethod
    def from_npz(cls, path: PathLike, target: str = "class", n_classes: int = 0, **kwargs: Any) -> "ArrayDataset":
        x, y = read_npz(path)
        check_targets(y, target, n_classes, path)
        return cls(x, y, target=target, path=path, **kwargs)

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        x = str(self.x[index]) if self.is_text else torch.from_numpy(np.asarray(self.x[index], dtype=np.float32))
        dtype = torch.long if self.target == "class" else torch.float32
        return {"id": index, "x": x, "y": torch.as_tensor(self.y[index], dtype=dtype)}

    def collater(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        if not samples:
            return {}
        xs = [s["x"] for s in samples]
        net_input = {"text": xs} if self.is_text else {"x": torch.stack(xs)}
        return {
            "id": torch.LongTensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": len(samples),
            "net_input": net_input,
            "target": torch.stack([s["y"] for s in samples]),
        }

    @property
    def sizes(self) -> np.ndarray:
        return self._sizes

    def num_tokens(self, index: int) -> int:
        return 1

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self._sizes[indices]

    def size(self, index: int) -> int:
        return 1

    def ordered_indices(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self), dtype=np.int64)
        with data_utils.numpy_seed(self.seed, self.epoch):
            return np.random.permutation(len(self)).astype(np.int64)

    @property
    def supports_prefetch(self) -> bool:
        return False

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return not self.shuffle

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
