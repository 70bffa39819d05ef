"""Task ``crossmodal_finetune``: a pretrained body fine-tuned on array data of another modality.

    ofa-make-array-data gunpoint --out data/gunpoint
    fairseq-train data/gunpoint --user-dir ofa_ext --task crossmodal_finetune --arch crossmodal_model \
        --body minilm --target-seq-len 64 --criterion crossmodal_loss --loss ce \
        --optimizer adam --lr 1e-4 --batch-size 8 --max-update 200 --best-checkpoint-metric accuracy \
        --maximize-best-checkpoint-metric

``DATA`` is a folder of ``{split}.npz`` files (``x``, ``y``; see ``data/arrays.py``). The sample shape
that builds the embedder comes from ``train.npz``; every split must share it. Text ``x`` (strings)
goes through the body's own tokenizer and token embedding (``--embedder text``, a text body). ``--num-classes``
defaults to ``meta.json``'s ``n_classes`` (written by ``ofa-make-array-data``). Class weights for
``--loss weighted_ce`` are ``N / (K · n_c)`` over the train split (ORCA: 1 / class frequency).
Validation logs sums only (``crossmodal_loss``), so accuracy over several processes is exact.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import II
from fairseq.tasks import FairseqTask, register_task

from ..data.arrays import TARGETS, ArrayDataset, ArrayFileError, check_targets, read_npz
from .dictionary_free import DictionaryFreeTask
from .training_start import TrainingRunOptions, prepare_training_start

logger = logging.getLogger(__name__)


@dataclass
class CrossmodalFinetuneConfig(TrainingRunOptions):
    data: str = field(default="", metadata={"help": "folder with {split}.npz files holding arrays x and y"})
    target: str = field(default="class", metadata={"help": "class | multilabel | regression | dense"})
    num_classes: int = field(default=0, metadata={
        "help": "classes (class, multilabel); 0 = n_classes of DATA/meta.json"})
    # fairseq fills this from --seed (common.seed): the per-epoch order of the train split follows the run's seed
    seed: int = II("common.seed")


@register_task("crossmodal_finetune", dataclass=CrossmodalFinetuneConfig)
class CrossmodalFinetuneTask(DictionaryFreeTask, FairseqTask):
    cfg: CrossmodalFinetuneConfig

    def __init__(self, cfg: CrossmodalFinetuneConfig, train_x: np.ndarray, train_y: np.ndarray, n_classes: int):
        super().__init__(cfg)
        if isinstance(cfg.seed, str):  # built outside a fairseq run (tests, tools): no --seed to follow
            cfg.seed = 1
        self.sample_shape = tuple(train_x.shape[1:])
        self.is_text = train_x.dtype.kind == "U"  # strings: the body's own tokenizer and embedding
        self.target_shape = tuple(train_y.shape[1:])
        self.n_classes = n_classes
        self.n_outputs = n_classes if cfg.target in ("class", "multilabel") else int(np.prod(self.target_shape or (1,)))
        self.class_weights = self._class_weights(train_y) if cfg.target == "class" else None

    @classmethod
    def setup_task(cls, cfg: CrossmodalFinetuneConfig, **kwargs):
        if cfg.target not in TARGETS:
            raise ValueError(f"--target must be one of {TARGETS}, got {cfg.target!r}")
        if not cfg.data or not Path(cfg.data).is_dir():
            raise FileNotFoundError(f"--data {cfg.data!r}: expected a folder of {{split}}.npz files")
        path = Path(cfg.data) / "train.npz"
        x, y = read_npz(path)
        n_classes = cfg.num_classes or cls._meta_classes(Path(cfg.data))
        needed = {"class": 2, "multilabel": 1}.get(cfg.target, 0)
        if n_classes < needed:
            raise ValueError(f"--num-classes {n_classes}: --target {cfg.target} needs at least {needed} (give "
                             "--num-classes, or a DATA/meta.json with n_classes)")
        check_targets(y, cfg.target, n_classes, path)
        prepare_training_start(cfg, kwargs)
        return cls(cfg, x, y, n_classes)

    @staticmethod
    def _meta_classes(folder: Path) -> int:
        meta = folder / "meta.json"
        return int(json.loads(meta.read_text()).get("n_classes", 0)) if meta.is_file() else 0

    def _class_weights(self, y: np.ndarray) -> torch.Tensor:
        counts = np.bincount(y, minlength=self.n_classes).astype(np.float64)
        weights = np.where(counts > 0, len(y) / (self.n_classes * np.maximum(counts, 1)), 0.0)
        return torch.tensor(weights, dtype=torch.float32)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        path = Path(self.cfg.data) / f"{split}.npz"
        ds = ArrayDataset.from_npz(path, self.cfg.target, self.n_classes, shuffle=(split == "train"), seed=self.cfg.seed)
        if ds.is_text != self.is_text:
            raise ArrayFileError(f"{path}: 'x' holds {'text' if ds.is_text else 'numbers'}, but train.npz holds "
                                 f"{'text' if self.is_text else 'numbers'}")
        if ds.sample_shape != self.sample_shape:
            raise ArrayFileError(f"{path}: samples of shape {ds.sample_shape}, but train.npz (which built the "
                                 f"embedder) has {self.sample_shape}")
        self.datasets[split] = ds
        logger.info("crossmodal_finetune: split %s, %d samples of shape %s from %s", split, len(ds), ds.sample_shape, path)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """fairseq's iterator, with two changes that make the data order independent of the number of
        processes (so 2 processes x batch B/2 = 1 process x batch B, update for update):

        * batches come in dataset order (the dataset draws a new sample permutation each epoch)
          instead of fairseq shuffling whole batches, whose size depends on the process count;
        * a batch-size multiple of 1 (samples cost the same, no padding); fairseq 0.12's
          ``batch_by_size`` also drops the last, smaller batch when ``--batch-size`` equals
          ``--required-batch-size-multiple`` (8 by default: 10 samples would give one batch of 8).
        """
        if len(args) >= 5:  # positional after dataset: max_tokens, max_sentences, max_positions, ignore, multiple
            args = args[:4] + (1,) + args[5:]
        else:
            kwargs["required_batch_size_multiple"] = 1
        iterator = super().get_batch_iterator(dataset, *args, **kwargs)
        iterator.disable_shuffling = True
        iterator.shuffle = False
        return iterator
