"""Task ``crossmodal_adaptation``: few-shot classification with class-name texts as extra samples.

Lin et al., CVPR 2023 (``specs/crossmodal_adaptation.md``). Trains a head on cached features
(``ofa-extract-features``): each batch mixes rows of the class-name text table with few-shot image
rows (``--modality uni_modal``: image rows only)::

    fairseq-train features/pets --user-dir ofa_ext --task crossmodal_adaptation --shots 4 --seed 1 \
        --arch xmodal_head --head linear --classifier-init zeroshot --criterion xmodal_ce \
        --optimizer adam --adam-betas '(0.9,0.999)' --weight-decay 1e-4 --lr 1e-3 \
        --lr-scheduler cosine --warmup-updates 50 --warmup-init-lr 1e-5 --max-update 12800 \
        --batch-size 32 --valid-subset valid,test --best-checkpoint-metric accuracy \
        --maximize-best-checkpoint-metric

Few-shot protocol (CoOp): ``--shots n`` samples per class (every cached view of each) drawn from
the train table with ``--seed``; validation = ``min(4, n)`` samples per class of the valid table
with the same seed; ``test`` = the whole test table. An epoch is ``--updates-per-epoch`` updates
(100: the released validation interval), so fairseq validates every 100 updates and keeps the best
state on validation accuracy in ``checkpoint_best.pt``; the accuracy is an all-reduced sum, so
every rank takes the same decision. Validation logs three heads: the trained one (``accuracy``),
WiSE-FT (``accuracy_wiseft``, ``--wise-ft-alpha``) and the zero-shot text classifier
(``accuracy_zeroshot``).

Partial fine-tuning (``--head partial``): features extracted with ``--layer k`` hold, for the
samples, the hidden states at the input of the body's last ``k`` blocks; the model copies those
blocks from the body folder named in the cache header (``sample_body``) and trains them (or PETL
pieces on them), logit scale 4.0 by default. ``--head partial`` on final features, or another head
on layer-k features, is refused with one line naming the file.

Where we differ: a batch whose text (or image) half does not fit its table is refused with one
line (the released sweep skips such batch sizes silently); the grid script reports the skip.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
from fairseq.data import iterators
from fairseq.logging import metrics
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import FairseqTask, register_task

from ..data.features import (CLASS_TABLE, FeatureCacheError, check_same_body, few_shot_rows, read_header,
                             read_table, table_path)
from ..data.features_dataset import FeatureRows, split_batch, two_stream_batches
from .dictionary_free import DictionaryFreeTask
from .training_start import TrainingRunOptions, prepare_training_start

logger = logging.getLogger(__name__)
MODALITIES = ("cross_modal", "uni_modal")


@dataclass
class CrossmodalAdaptationConfig(TrainingRunOptions):
    data: str = field(default="", metadata={"help": "folder written by ofa-extract-features"})
    shots: int = field(default=1, metadata={"help": "training samples per class (CoOp: 1, 2, 4, 8, 16); -1 = all"})
    seed: int = field(default=1, metadata={"help": "seed of the few-shot draw and of the batch orders"})
    max_val_shots: int = field(default=4, metadata={"help": "validation samples per class = min(this, --shots)"})
    modality: str = field(default="cross_modal", metadata={
        "help": "cross_modal (text rows + image rows per batch) | uni_modal (image rows only)"})
    text_batch_ratio: float = field(default=0.5, metadata={"help": "share of each batch taken from the text table"})
    updates_per_epoch: int = field(default=100, metadata={
        "help": "updates per fairseq epoch = the validation interval (released: 100)"})
    wise_ft_alpha: float = field(default=0.5, metadata={
        "help": "WiSE-FT evaluation head (1-a)*W + a*W_zeroshot, logged as accuracy_wiseft"})
    body: Optional[str] = field(default=None, metadata={
        "help": "if given, the features must have been made by this body spec (and --layer)"})
    layer: int = field(default=0, metadata={"help": "layer index the features must have been cached at"})


def _sample_table(folder: Path, split: str):
    found = sorted(p for p in folder.glob(f"{split}.*.safetensors"))
    if len(found) != 1:
        raise FeatureCacheError(f"{folder}: expected one {split}.image.safetensors (or .text), found "
                                f"{[p.name for p in found] or 'none'}")
    return found[0], read_table(found[0])


def _sample_path(folder: Path, split: str) -> Path:
    found = sorted(p for p in folder.glob(f"{split}.*.safetensors"))
    return found[0] if len(found) == 1 else _sample_table(folder, split)[0]


@register_task("crossmodal_adaptation", dataclass=CrossmodalAdaptationConfig)
class CrossmodalAdaptationTask(DictionaryFreeTask, FairseqTask):
    cfg: CrossmodalAdaptationConfig

    def __init__(self, cfg: CrossmodalAdaptationConfig, text_table):
        super().__init__(cfg)
        self.text_table = text_table
        self.classnames = text_table.header["classnames"]
        self.n_classes = len(self.classnames)
        self.train_image_rows = 0

    @classmethod
    def setup_task(cls, cfg: CrossmodalAdaptationConfig, **kwargs):
        if cfg.modality not in MODALITIES:
            raise ValueError(f"--modality must be one of {MODALITIES}, got {cfg.modality!r}")
        if not 0 <= cfg.text_batch_ratio < 1:
            raise ValueError(f"--text-batch-ratio must be in [0, 1), got {cfg.text_batch_ratio}")
        folder = Path(cfg.data)
        if not folder.is_dir():
            raise FileNotFoundError(f"--data {cfg.data!r}: expected a folder written by ofa-extract-features")
        path = table_path(folder, CLASS_TABLE, "text")
        text = read_table(path)
        if cfg.body is not None:
            check_same_body(path, text.header, cfg.body, cfg.layer)
        prepare_training_start(cfg, kwargs)
        return cls(cfg, text)

    @property
    def sample_layer(self) -> int:
        """k of the cache: 0 = final features, else the samples are the input of the last k blocks."""
        return int(self.text_table.header.get("layer", 0))

    def partial_tower(self):
        """The body's last k blocks (+ norm, pooling, projection) with the pretrained weights of the
        body folder named in the train table's header; its shapes must be those the cache was made with."""
        from ..api import load_body
        from ..models.crossmodal.partial_blocks import PartialTower

        path = _sample_path(Path(self.cfg.data), "train")
        if self.sample_layer == 0:
            raise FeatureCacheError(f"--head partial: {path} holds final features (layer 0); partial fine-tuning "
                                    "needs the hidden states of ofa-extract-features --layer k (k >= 1)")
        header = read_header(path)
        body = load_body(header["sample_body"])
        signatures = list(header["signature"].values())
        if body.signature() not in signatures:
            raise FeatureCacheError(f"{path}: made by {header['sample_body']} with shapes {signatures}, but that "
                                    f"folder now holds {body.signature()} (the checkpoint changed): extract again")
        return PartialTower(body, self.sample_layer)

    def zeroshot_weights(self) -> torch.Tensor:
        from ..models.crossmodal.adaptation import zeroshot_weights

        return zeroshot_weights(self.text_table.features, self.text_table.labels, self.n_classes)

    def _check_table(self, path: Path, table) -> None:
        mine, theirs = self.text_table.header, table.header
        for key in ("body", "layer", "signature"):
            if mine.get(key) != theirs.get(key):
                raise FeatureCacheError(f"{path}: made by body {theirs.get('body')!r} layer {theirs.get('layer')}, but "
                                        f"{CLASS_TABLE}.safetensors by {mine.get('body')!r} layer {mine.get('layer')}")
        if theirs.get("classnames") != self.classnames:
            raise FeatureCacheError(f"{path}: its class names differ from those of {CLASS_TABLE}.safetensors")

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        cfg = self.cfg
        path, table = _sample_table(Path(cfg.data), split)
        self._check_table(path, table)
        if split == "train":
            rows = torch.arange(len(table)) if cfg.shots < 0 else few_shot_rows(table, cfg.shots, cfg.seed, path)
        elif split == "valid":
            shots = cfg.max_val_shots if cfg.shots < 0 else min(cfg.max_val_shots, cfg.shots)
            rows = few_shot_rows(table, shots, cfg.seed, path, option="validation shots = min(--max-val-shots, --shots)")
            rows = rows[table.view[rows] == 0]
        else:
            rows = torch.nonzero(table.view == 0).flatten()
        feats, labels = table.features[rows], table.labels[rows]
        padding = None if table.padding is None else table.padding[rows]
        n_text, t = 0, self.text_table
        text_feats, text_labels = t.features[:0], t.labels[:0]
        if split == "train":
            self.train_image_rows = len(rows)
            if cfg.modality == "cross_modal":
                text_feats, text_labels, n_text = t.features, t.labels, len(t)
        labels = torch.cat([text_labels, labels])
        if feats.dim() == 3:  # hidden states of the last blocks' input: the head's blocks take them
            self.datasets[split] = FeatureRows(text_feats, labels, n_text, tokens=feats, padding=padding)
        else:
            self.datasets[split] = FeatureRows(torch.cat([text_feats, feats]), labels, n_text)
        logger.info("crossmodal_adaptation: %s: %d rows from %s (%s)", split, len(rows), path,
                    f"{cfg.shots} shots, seed {cfg.seed}" if split != "test" else "all")

    def batch_halves(self, batch_size: int) -> tuple:
        """(text rows, image rows) per batch; one line and a stop when a half exceeds its table."""
        text_half, image_half = split_batch(batch_size, self.cfg.text_batch_ratio if self.cfg.modality == "cross_modal"
                                            else 0.0)
        n_text = len(self.text_table) if self.cfg.modality == "cross_modal" else 0
        if text_half > n_text or image_half > self.train_image_rows or image_half == 0:
            raise ValueError(
                f"--batch-size {batch_size}: the text half ({text_half} rows) must fit the text table "
                f"({n_text} rows) and the image half ({image_half} rows) the {self.train_image_rows} few-shot image "
                "rows; the released code skips such sizes silently, here the run stops: pick a smaller --batch-size")
        return text_half, image_half

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1,
                           shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False,
                           **kwargs):
        if dataset is not self.datasets.get("train"):
            return super().get_batch_iterator(dataset, max_tokens, max_sentences, max_positions,
                                              ignore_invalid_inputs, 1, seed, num_shards, shard_id, num_workers,
                                              epoch, data_buffer_size, disable_iterator_cache, **kwargs)
        if not max_sentences:
            raise ValueError("crossmodal_adaptation: give --batch-size (rows per update and process)")
        text_half, image_half = self.batch_halves(int(max_sentences))
        n_text = len(dataset) - self.train_image_rows
        steps = self.cfg.updates_per_epoch * num_shards  # every rank gets updates_per_epoch batches

        def batches(_dataset, ep: int):  # fairseq calls it per epoch
            return two_stream_batches(n_text, self.train_image_rows, text_half, image_half, self.cfg.seed, ep, steps)

        return iterators.EpochBatchIterator(dataset=dataset, collate_fn=dataset.collater, batch_sampler=batches,
                                            seed=seed, num_shards=num_shards, shard_id=shard_id,
                                            num_workers=num_workers, epoch=epoch, buffer_size=data_buffer_size,
                                            disable_shuffling=True)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """FairseqTask's step without its per-update profiler ranges and disabled autocast context."""
        model.train()
        model.set_num_updates(update_num)
        if isinstance(optimizer, AMPOptimizer):
            with torch.autocast("cuda"):
                loss, sample_size, logging_output = criterion(model, sample)
        else:
            loss, sample_size, logging_output = criterion(model, sample)
        if ignore_grad:
            loss = loss * 0
        optimizer.backward(loss)
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        """Rows per batch (``bsz``) and the criterion's sums; no wpb/wps: a row is not a token."""
        metrics.log_scalar("bsz", sum(log.get("nsentences", 0) for log in logging_outputs), priority=190, round=1)
        criterion.__class__.reduce_metrics(logging_outputs)

    def build_model(self, cfg, from_checkpoint=False):
        if self.sample_layer and getattr(cfg, "head", None) != "partial":
            raise FeatureCacheError(f"--head {getattr(cfg, 'head', None)}: {_sample_path(Path(self.cfg.data), 'train')} "
                                    f"holds hidden states at the input of the last {self.sample_layer} blocks "
                                    "(ofa-extract-features --layer); train them with --head partial")
        model = super().build_model(cfg, from_checkpoint)
        if tuple(model.zeroshot.shape) != (self.n_classes, self.text_table.features.shape[1]):
            raise ValueError("crossmodal_adaptation: the head's zero-shot rows do not match the text table")
        return model

    def summary(self) -> Dict[str, int]:
        return {"text_rows": len(self.text_table), "train_image_rows": self.train_image_rows}
