"""Task ``pare``: PaRe's gated patch replacement with an easy-to-hard curriculum (`specs/pare.md`).

    ofa-source-features --body minilm --corpus polarity --out src/minilm_polarity.safetensors
    fairseq-train data/gunpoint --user-dir ofa_ext --task pare --arch pare_model --body minilm \
        --target-seq-len 64 --pare-source-features src/minilm_polarity.safetensors \
        --pare-seq-num 32 --pare-epochs 15 --max-epoch 15 \
        --criterion pare_mix --loss ce --optimizer adam --lr 3e-5 --batch-size 64

ORCA's refine stage (task ``orca``) where every training batch is also mixed with a source batch of
exactly its size (``pare_source.SourceBatches``: rank-sharded, endless, reseeded per epoch). The
criterion ``pare_mix`` adds PaRe's loss on the mixed tokens; validation scores the plain target
path only. ORCA's align stage is off as released (``--orca-stage refine``, the default here);
``--orca-stage both`` runs it first.

Per epoch (``begin_epoch``, the same epoch number on every rank): k from the curriculum
(``--pare-seq-num`` = the 1-D rule, or ``--pare-begin-num`` / ``--pare-end-num`` = the 2-D rule,
over ``--pare-epochs``; validated for every epoch at setup), λ = k / N, and the phase: relaxed
Gumbel top-k for the first ``--pare-relaxed-epochs`` (released: 10 for 2-D, 5 for 1-D), then
deterministic top-k. ``--pare-replace`` (unset = the released end per phase: relaxed ``low``,
deterministic ``high``; ``low`` / ``high`` = that end in both phases) picks which target tokens are
overwritten. Setup stops with one line for: a source file whose width or body differs from the
model's, a schedule reaching k = 0 (``--pare-clamp-k`` uses 1 instead) or exceeding the target /
source token counts, a source set with fewer rows than one batch on every process.
"""


import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.tasks import register_task

from ..criterions.pare_losses import AUX_WEIGHTS, pare_aux_weight
from ..data.source_features import load_source_features
from ..metrics.alignment import rank_and_world
from ..models.crossmodal.embedders import Embedder2D
from ..models.crossmodal.pare import PHASES, RELEASED_REPLACE, REPLACE_CHOICES
from ..models.crossmodal.pare_schedule import PareSchedule
from ..models.crossmodal.pare_source import SourceBatches, check_source_rows
from .orca import OrcaConfig, OrcaTask

logger = logging.getLogger(__name__)

PARE_KEY = "pare"


@dataclass
class PareConfig(OrcaConfig):
    orca_stage: str = field(default="refine", metadata={
        "help": "refine (PaRe as released: no alignment) | both (ORCA's align stage first) | align"})
    pare_source_features: str = field(default="", metadata={
        "help": "token-level source features (ofa-source-features; xs (N, T, d), ys); unset: --orca-source-features"})
    pare_epochs: int = field(default=0, metadata={
        "help": "epochs of the curriculum (the released `epochs`, normally = --max-epoch); required"})
    pare_seq_num: int = field(default=0, metadata={
        "help": "1-D rule k(ep) = floor(seq_num (1 - ep/epochs)) (released 1-D: 32)"})
    pare_begin_num: int = field(default=0, metadata={
        "help": "2-D rule k(ep) = floor(begin_num - end_num ep/epochs) (released CIFAR-100: 2000)"})
    pare_end_num: int = field(default=0, metadata={"help": "2-D rule's end_num (released CIFAR-100: 1500)"})
    pare_clamp_k: bool = field(default=False, metadata={
        "help": "use k = 1 where the schedule reaches 0 (released Satellite) instead of stopping at setup"})
    pare_relaxed_epochs: int = field(default=-1, metadata={
        "help": "epochs of the relaxed (Gumbel top-k) phase, then deterministic top-k; -1 = released "
                "(10 for a 2-D embedder, 5 otherwise)"})
    pare_tau: float = field(default=0.9, metadata={"help": "temperature of the relaxed top-k (released: 0.9)"})
    pare_replace: str = field(default="", metadata={
        "help": "target tokens overwritten: low | high (lowest / highest gate scores, both phases); "
                "unset = released (relaxed: low, deterministic: high)"})
    pare_task_type: str = field(default="auto", metadata={
        "help": "auxiliary weight by task type: auto (2-D embedder: 2d-classification, else 1d) | "
                + " | ".join(AUX_WEIGHTS)})
    pare_aux_weight: float = field(default=-1.0, metadata={
        "help": "weight of the mixed-sample terms; -1 = by --pare-task-type (1.0 / 0.3 / 0.1)"})


def build_schedule(cfg: PareConfig) -> tuple[PareSchedule, str]:
    """The curriculum from the options, and how the user spelled it (for error messages)."""
    if cfg.pare_epochs < 1:
        raise ValueError(f"--pare-epochs must be >= 1 (the curriculum's length, normally = --max-epoch), "
                         f"got {cfg.pare_epochs}")
    if cfg.pare_seq_num > 0 and (cfg.pare_begin_num or cfg.pare_end_num):
        raise ValueError("give either --pare-seq-num (1-D rule) or --pare-begin-num/--pare-end-num (2-D rule), "
                         "not both")
    if cfg.pare_seq_num > 0:
        return PareSchedule.one_d(cfg.pare_seq_num, cfg.pare_epochs, cfg.pare_clamp_k), f"--pare-seq-num {cfg.pare_seq_num}"
    if cfg.pare_begin_num <= 0:  # the released PSICOV config has neither (it fails at the first mixed batch)
        raise ValueError("PaRe needs a curriculum: --pare-seq-num N (1-D rule) or --pare-begin-num B "
                         "--pare-end-num E (2-D rule)")
    return PareSchedule(cfg.pare_begin_num, cfg.pare_end_num, cfg.pare_epochs, cfg.pare_clamp_k), ""


@register_task("pare", dataclass=PareConfig)
class PareTask(OrcaTask):
    cfg: PareConfig

    def __init__(self, cfg: PareConfig, train_x, train_y, n_classes: int):
        super().__init__(cfg, train_x, train_y, n_classes)
        if cfg.pare_replace not in ("",) + REPLACE_CHOICES:
            raise ValueError(f"--pare-replace must be low or high (or unset for the released ends), got "
                             f"{cfg.pare_replace!r}")
        if cfg.pare_task_type != "auto":
            pare_aux_weight(cfg.pare_task_type)  # validates the name
        if cfg.pare_tau <= 0:
            raise ValueError(f"--pare-tau must be > 0, got {cfg.pare_tau}")
        self.schedule, self._spelled = build_schedule(cfg)
        self.schedule.validate(options=self._spelled)  # k >= 1 now; token counts once the model exists
        self.source_option = "--pare-source-features" if cfg.pare_source_features else "--orca-source-features"
        self.source_path = cfg.pare_source_features or cfg.orca_source_features
        if not self.source_path:
            raise ValueError("--task pare needs --pare-source-features (token-level features from ofa-source-features)")
        feats = load_source_features(self.source_path, option=self.source_option)
        self.source_xs, self.source_ys, self.source_meta = feats.xs, feats.ys, feats.meta
        self.n_source_classes = int(feats.ys.max()) + 1
        self.source_batches: Optional[SourceBatches] = None
        self.state: dict = {}

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        self.check_model(model)
        return model

    def check_model(self, model) -> None:
        """Setup-time checks against the built model, then the per-run constants (tokens, weight, phases)."""
        if not hasattr(model, "gate"):
            raise ValueError("--task pare needs --arch pare_model (the crossmodal model plus PaRe's gate and source head)")
        body = model.body
        width, kind = self.source_xs.shape[-1], self.source_meta.get("body_kind")
        if width != body.width:
            raise ValueError(f"{self.source_option} {self.source_path}: source tokens of width {width} (body "
                             f"{kind!r}), but the model's body {body.kind!r} has width {body.width}")
        if kind not in (None, body.kind):
            raise ValueError(f"{self.source_option} {self.source_path}: features of body {kind!r}, but the "
                             f"model's body is {body.kind!r}")
        self.n_target_tokens = int(model.embedder.n_tokens)
        self.n_source_tokens = int(self.source_xs.shape[1])
        self.schedule.validate(self.n_target_tokens, self.n_source_tokens, self._spelled)
        two_d = isinstance(model.embedder, Embedder2D)
        task_type = self.cfg.pare_task_type
        if task_type == "auto":
            task_type = "2d-classification" if two_d else "1d"
        if task_type == "2d-dense":
            raise ValueError("--pare-task-type 2d-dense compares the mixed output with source masks, which "
                             "ofa-source-features files do not carry; use 2d-classification or 1d")
        self.aux_weight = self.cfg.pare_aux_weight if self.cfg.pare_aux_weight >= 0 else pare_aux_weight(task_type)
        self.relaxed_epochs = self.cfg.pare_relaxed_epochs if self.cfg.pare_relaxed_epochs >= 0 else (10 if two_d else 5)
        logger.info("pare: %d target tokens, %d source tokens (%d rows, %d classes, %s); k per epoch %s; "
                    "relaxed epochs %d; aux weight %s (%s)", self.n_target_tokens, self.n_source_tokens,
                    self.source_xs.shape[0], self.n_source_classes, self.source_path, self.schedule.ks(),
                    self.relaxed_epochs, self.aux_weight, task_type)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        if dataset is self.datasets.get("train"):
            batch = kwargs.get("max_sentences", args[1] if len(args) > 1 else None)
            if not batch:
                raise ValueError("--task pare needs --batch-size (the source batch has exactly the target batch's size)")
            rank, world = rank_and_world()
            check_source_rows(self.source_xs.shape[0], batch, f"{self.source_option} {self.source_path}", world)
            self.source_batches = SourceBatches(self.source_xs.shape[0], batch, self.cfg.seed, rank, world,
                                                self.source_path)
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def begin_epoch(self, epoch: int, model) -> None:
        """Fix k, λ and the phase for this (1-based) epoch; fairseq gives every rank the same number."""
        super().begin_epoch(epoch, model)
        ep = epoch - 1
        k = self.schedule.k(ep)
        phase = PHASES[0] if ep < self.relaxed_epochs else PHASES[1]
        self.state = {"k": k, "lam": k / self.n_target_tokens, "phase": phase,
                      "replace": self.cfg.pare_replace or RELEASED_REPLACE[phase]}
        if self.source_batches is not None:
            self.source_batches.set_epoch(epoch)
        logger.info("pare: epoch %d: k = %d, λ = %.4f, %s phase, replace %s", epoch, k, self.state["lam"], phase,
                    self.state["replace"])

    def with_source(self, sample: dict) -> dict:
        """The sample plus this step's source tokens, labels, noise and curriculum state."""
        if self.source_batches is None or not self.state:
            raise RuntimeError("pare: the source stream starts in get_batch_iterator / begin_epoch")
        target = sample["target"]
        b, device = int(target.shape[0]), target.device
        rows, block = self.source_batches.next_batch(b)
        extra = {**self.state, "tokens": self.source_xs[rows].to(device), "labels": self.source_ys[rows].to(device),
                 "tau": self.cfg.pare_tau, "aux_weight": self.aux_weight}
        if self.state["phase"] == "relaxed":
            extra["noise_t"], extra["noise_s"] = self.source_batches.noise(
                block, b, (self.n_target_tokens, self.n_source_tokens), device)
        return {**sample, PARE_KEY: extra}

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if update_num >= self.align_updates:
            sample = self.with_source(sample)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
