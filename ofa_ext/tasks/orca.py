"""Task ``orca``: ORCA's align-then-refine (`specs/orca.md` §8–9) on any body of this plugin.

    ofa-source-features --body minilm --corpus lee --out src/minilm_lee.safetensors
    fairseq-train data/gunpoint --user-dir ofa_ext --task orca --arch crossmodal_model --body minilm \
        --orca-source-features src/minilm_lee.safetensors --orca-stage both --orca-embedder-epochs 60 \
        --criterion orca_align --loss ce --optimizer adam --lr 1e-4 --lr-scheduler fixed \
        --batch-size 8 --max-update 260

**Align** (the first ``--orca-embedder-epochs`` updates): only the embedder trains. One update =
one ORCA "embedder epoch": every target (pseudo-)class c, in a fresh rank-shared random order,
contributes a cloud of ``--orca-maxsamples`` rows (or the whole class), embedded and mean-pooled;
the loss is Σ_c w_c·D(source, F_t,c) (criterion ``orca_align``), one optimiser step. The batches
fairseq draws are not used in these updates. **Refine** (the updates after): everything trains on
the task loss — or, with ``--lora`` / ``--adapter`` / ``--bitfit`` / ``--input-prompt-length``,
only those pieces, the embedder and the head (the model's PETL options). The optimiser state is
reset when refine starts, as ORCA builds a new optimiser. ``--orca-stage align`` stops after the
align updates (``--max-update`` = epochs); ``--orca-stage refine`` skips them, and continues from
an align checkpoint with ``--finetune-from-model ALIGN_CHECKPOINT.pt``.

Learning rates (``--orca-lr-rules``, on by default; the task then sets the lr of every update and
``--lr-scheduler`` is ignored): align = lr × 10 when lr ≤ 1e-3, × 0.2 at updates 20, 40, 60
(ORCA's StepLR); refine = lr with ORCA's WarmupLR: linear warm-up from 0 over
``--orca-refine-warmup`` updates, then linear decay to 0 at ``--orca-refine-decay`` refine updates.

Targets without classes (regression, dense, multi-label) get k-means pseudo-labels for the align
stage (``--orca-infer-label-k``, ORCA: 10). Source features come from ``ofa-source-features`` and
must match the body (width and kind); at most ``--orca-source-maxsamples`` rows are kept (ORCA's
``maxsamples=5000`` of its OTDD call), drawn with the task seed.
"""


import logging
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from fairseq.tasks import register_task

from ..criterions.orca_align import ALIGN_KEY, average_gradients
from ..data.source_features import load_source_features
from ..metrics.alignment import OBJECTIVES, AlignmentObjective, shared_generator
from ..metrics.kmeans import class_weights, pseudo_labels
from .crossmodal_finetune import CrossmodalFinetuneConfig, CrossmodalFinetuneTask

logger = logging.getLogger(__name__)

STAGES = ("both", "align", "refine")
ROW_DRAW_KEY = 1_000_003  # keeps the row draws' generator keys apart from the source draws'


@dataclass
class OrcaConfig(CrossmodalFinetuneConfig):
    orca_stage: str = field(default="both", metadata={
        "help": "both (align then refine in one run) | align (embedder only) | refine (task loss only)"})
    orca_objective: str = field(default="otdd-exact", metadata={
        "help": "alignment distance: otdd-exact (debiased-Sinkhorn label distances, ORCA's default) | "
                "otdd-gaussian (Bures label distances) | mmd | l2"})
    orca_source_features: str = field(default="", metadata={
        "help": "source features file from ofa-source-features (needed by the align stage)"})
    orca_embedder_epochs: int = field(default=60, metadata={
        "help": "align updates (ORCA's embedder_epochs: one optimiser step over all classes each)"})
    orca_maxsamples: int = field(default=128, metadata={
        "help": "target rows per class cloud in an align update (ORCA: 128; 64 for PSICOV/DeepSEA)"})
    orca_source_maxsamples: int = field(default=5000, metadata={
        "help": "keep at most this many source rows (ORCA's OTDD maxsamples)"})
    orca_infer_label_k: int = field(default=10, metadata={
        "help": "k-means pseudo-classes for targets without classes (ORCA's infer_label: 10)"})
    orca_lr_rules: bool = field(default=True, metadata={
        "help": "set every update's lr by ORCA's rules (align: x10 if lr <= 1e-3, x0.2 at 20/40/60; "
                "refine: warm-up + linear decay); --lr-scheduler is then ignored"})
    orca_refine_warmup: int = field(default=0, metadata={
        "help": "refine: linear lr warm-up from 0 over this many updates (ORCA: warmup_epochs x batches)"})
    orca_refine_decay: int = field(default=0, metadata={
        "help": "refine: the lr decays linearly to 0 at this many refine updates (ORCA: decay_epochs x "
                "batches); 0 = constant after the warm-up"})


def orca_learning_rate(base: float, update: int, align_updates: int, warmup: int = 0, decay: int = 0,
                       milestones: Sequence[int] = (20, 40, 60), gamma: float = 0.2) -> float:
    """The lr of 0-based update `update` under ORCA's rules (module docstring)."""
    if update < align_updates:
        lr = base * 10 if base <= 1e-3 else base
        return lr * gamma ** sum(update >= m for m in milestones)
    step = update - align_updates
    if warmup > 0 and step < warmup:
        return base * step / warmup
    if decay > 0:
        return base * max(0.0, (decay - step) / max(1, decay - warmup))
    return base


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@register_task("orca", dataclass=OrcaConfig)
class OrcaTask(CrossmodalFinetuneTask):
    cfg: OrcaConfig

    def __init__(self, cfg: OrcaConfig, train_x: np.ndarray, train_y: np.ndarray, n_classes: int):
        super().__init__(cfg, train_x, train_y, n_classes)
        if cfg.orca_stage not in STAGES:
            raise ValueError(f"--orca-stage must be one of {STAGES}, got {cfg.orca_stage!r}")
        if cfg.orca_objective not in OBJECTIVES:
            raise ValueError(f"--orca-objective must be one of {OBJECTIVES}, got {cfg.orca_objective!r}")
        self.align_updates = cfg.orca_embedder_epochs if cfg.orca_stage != "refine" else 0
        self.alignment: Optional[AlignmentObjective] = None
        self._train_x = train_x
        self._source_meta: Dict = {}
        if self.align_updates > 0:
            if cfg.orca_maxsamples < 2:
                raise ValueError(f"--orca-maxsamples {cfg.orca_maxsamples}: a class cloud needs at least 2 rows")
            self._setup_align(train_y)

    # -- align-stage data ----------------------------------------------------------------------
    def _setup_align(self, train_y: np.ndarray) -> None:
        cfg = self.cfg
        if not cfg.orca_source_features:
            raise ValueError(f"--orca-stage {cfg.orca_stage} needs --orca-source-features (make one with "
                             "ofa-source-features)")
        labels = train_y if cfg.target == "class" else pseudo_labels(train_y, cfg.orca_infer_label_k, cfg.seed)
        labels = np.asarray(labels, dtype=np.int64)
        counts = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
        small = [c for c, n in counts.items() if n < 2]
        if small:
            raise ValueError(f"{cfg.data}/train.npz: class {small[0]} has {counts[small[0]]} sample(s); the "
                             "align stage needs at least 2 per class")
        self.align_rows = {c: np.flatnonzero(labels == c) for c in counts}
        self.align_weights = class_weights(labels)
        feats = load_source_features(cfg.orca_source_features)
        self._source_meta = {"width": feats.width, "body_kind": feats.meta.get("body_kind"),
                             "path": cfg.orca_source_features}
        xs, ys = feats.pooled(), feats.ys
        if xs.shape[0] > cfg.orca_source_maxsamples:
            keep = torch.randperm(xs.shape[0], generator=shared_generator(cfg.seed, -2))[: cfg.orca_source_maxsamples]
            xs, ys = xs[keep.sort().values], ys[keep.sort().values]
        self.alignment = AlignmentObjective(cfg.orca_objective, xs, ys, seed=cfg.seed)
        logger.info("orca: %s alignment to %d source rows (%d classes) of %s; %d target classes %s",
                    cfg.orca_objective, xs.shape[0], int(ys.unique().numel()), cfg.orca_source_features,
                    len(counts), counts)

    def build_model(self, cfg, from_checkpoint: bool = False):
        return self.check_source_matches(super().build_model(cfg, from_checkpoint))

    def check_source_matches(self, model):
        """The source features must come from this model's body: same width, same body kind."""
        meta = self._source_meta
        if meta:
            body = model.body
            if meta["width"] != body.width:
                raise ValueError(f"--orca-source-features {meta['path']}: features of width {meta['width']} "
                                 f"(body {meta['body_kind']!r}), but the model's body {body.kind!r} has width "
                                 f"{body.width}")
            if meta["body_kind"] not in (None, body.kind):
                raise ValueError(f"--orca-source-features {meta['path']}: features of body {meta['body_kind']!r}, "
                                 f"but the model's body is {body.kind!r}")
        return model

    def align_batch(self, update: int, device: torch.device) -> dict:
        """This rank's shard of every class cloud of `update` (the draw is the same on every rank)."""
        rank, world = _world()
        shards = {}
        for c, rows in self.align_rows.items():
            perm = torch.randperm(len(rows), generator=shared_generator(self.cfg.seed, update, ROW_DRAW_KEY + c))
            picked = rows[perm[: self.cfg.orca_maxsamples].numpy()]
            mine = np.array_split(picked, world)[rank]
            shards[c] = torch.as_tensor(self._train_x[mine], dtype=torch.float32, device=device)
        return {"shards": shards, "weights": self.align_weights, "update": update}

    # -- training --------------------------------------------------------------------------------
    def learning_rate(self, optimizer, update_num: int) -> float:
        lr = optimizer.cfg.lr
        base = float(lr if isinstance(lr, (int, float)) else lr[0])
        return orca_learning_rate(base, update_num, self.align_updates, self.cfg.orca_refine_warmup,
                                  self.cfg.orca_refine_decay)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        loss, sample_size, log = self._train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if self.cfg.orca_lr_rules:  # the same keys on every rank (fairseq sums them); values on rank 0
            first = float(_world()[0] == 0)
            log = {**log, "orca_lr": self.learning_rate(optimizer, update_num) * first, "orca_lr_n": first}
        return loss, sample_size, log

    def _train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad):
        if update_num < self.align_updates:
            model.train()
            device = next(model.parameters()).device
            loss, sample_size, log = criterion(model, {ALIGN_KEY: self.align_batch(update_num, device)})
            if ignore_grad:
                loss = loss * 0
            optimizer.backward(loss)
            average_gradients(model)
            return loss, sample_size, log
        if self.cfg.orca_stage == "align":
            raise ValueError(f"--orca-stage align runs {self.align_updates} updates: set --max-update "
                             f"{self.align_updates} (= --orca-embedder-epochs)")
        if self.align_updates > 0 and update_num == self.align_updates:
            optimizer.optimizer.state.clear()  # ORCA builds a fresh optimiser for refine
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        if self.cfg.orca_lr_rules:
            optimizer.set_lr(self.learning_rate(optimizer, update_num))
        super().optimizer_step(optimizer, model, update_num)
