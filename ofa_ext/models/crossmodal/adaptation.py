"""Heads of cross-modal few-shot adaptation (Lin et al., ``engine/model/head.py``, ``logit.py``).

``logits = exp(s) · head(f / ‖f‖₂)`` with ``s`` fixed (4.60517: exp(s) = 100, CLIP's scale;
4.0 for partial fine-tuning). Heads: ``linear`` (``Linear(D, C, bias=False)``) and ``adapter``
(CLIP-Adapter: ``x ↦ 0.2·a(x) + 0.8·x``, ``a = ReLU ∘ Linear(D/4→D) ∘ ReLU ∘ Linear(D→D/4)``, no
biases, then the linear head). Zero-shot init: row c = normalise(mean over templates of the class
text features) — averaged before normalising. The zero-shot rows stay in a buffer for the
evaluation heads: ``zeroshot`` and WiSE-FT ``(1 − α)·W + α·normalise_rows(W_zs)`` (adapter: its
final linear layer only).

``partial`` (released partial fine-tuning): the samples come as hidden states cached at the input
of the body's last ``k`` blocks (``ofa-extract-features --layer k``); a copy of those blocks and of
the final norm / pooling / projection, loaded from the body folder with its pretrained weights
(``partial_blocks.PartialTower``), turns them into features, then the linear head; logit scale 4.0
unless ``--logit-scale`` says otherwise. Text rows stay final text features (released
``text_layer_idx = 0``). The PETL flags (``--lora``, ``--adapter``, ``--bitfit``, ...) put pieces of
the project's PETL on those blocks instead of training them whole (the linear head still trains).
WiSE-FT and the zero-shot head then read the trained blocks' features (the released code warns
that WiSE-FT does not account for a partially fine-tuned encoder).
"""

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.models import BaseFairseqModel, register_model
from torch import Tensor, nn

from ..petl.config import PETLConfig, active_methods

HEADS = ("linear", "adapter", "partial")
LOGIT_SCALES = {"partial": 4.0}  # released partial fine-tuning; every other head: 4.60517 (exp = 100)
INITS = ("zeroshot", "random")


def zeroshot_weights(features: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """(C, D): per class, the mean of its text rows, then L2-normalised."""
    sums = torch.zeros(n_classes, features.shape[1], dtype=torch.float64).index_add_(0, labels, features.double())
    counts = torch.bincount(labels, minlength=n_classes).clamp_min(1).unsqueeze(1)
    return F.normalize((sums / counts).float(), dim=-1)


class ClipAdapter(nn.Module):
    """CLIP-Adapter's residual bottleneck: ``ratio·a(x) + (1 − ratio)·x``."""

    def __init__(self, width: int, reduction: int = 4, ratio: float = 0.2, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(width, width // reduction, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(width // reduction, width, bias=False, device=device, dtype=dtype)
        self.ratio = ratio

    def forward(self, x: Tensor) -> Tensor:
        return self.ratio * F.relu(self.up(F.relu(self.down(x)))) + (1 - self.ratio) * x


@dataclass
class XModalHeadConfig(PETLConfig):
    head: str = field(default="linear", metadata={
        "help": "linear | adapter (CLIP-Adapter, then a linear head) | partial (the body's last k blocks, from "
                "features cached with ofa-extract-features --layer k, then a linear head)"})
    classifier_init: str = field(default="zeroshot", metadata={
        "help": "zeroshot (rows = normalised mean text feature of the class) | random (PyTorch Linear init)"})
    logit_scale: Optional[float] = field(default=None, metadata={
        "help": "fixed log logit scale s; default 4.60517 (exp(s)=100, CLIP's), --head partial 4.0 (released)"})
    adapter_ratio: float = field(default=0.2, metadata={"help": "CLIP-Adapter residual ratio"})


@register_model("xmodal_head", dataclass=XModalHeadConfig)
class XModalHead(BaseFairseqModel):
    """Normalise → (adapter) → linear, times the fixed scale; ``forward(features (B, D)) -> (B, C)``."""

    def __init__(self, cfg: XModalHeadConfig, zeroshot: Tensor, partial: Optional[nn.Module] = None):
        super().__init__()
        if cfg.head not in HEADS or cfg.classifier_init not in INITS:
            raise ValueError(f"--head must be one of {HEADS} and --classifier-init one of {INITS}, "
                             f"got {cfg.head!r}, {cfg.classifier_init!r}")
        if (cfg.head == "partial") != (partial is not None):
            raise ValueError("--head partial needs the body's last blocks (and only it takes them)")
        n_classes, width = zeroshot.shape
        self.partial = partial
        self.adapter = ClipAdapter(width, ratio=cfg.adapter_ratio) if cfg.head == "adapter" else None
        self.linear = nn.Linear(width, n_classes, bias=False)
        if cfg.classifier_init == "zeroshot":
            with torch.no_grad():
                self.linear.weight.copy_(zeroshot)
        self.register_buffer("zeroshot", zeroshot.clone())
        s = cfg.logit_scale if cfg.logit_scale is not None else LOGIT_SCALES.get(cfg.head, 4.60517)
        self.scale = float(torch.tensor(s).exp())

    @classmethod
    def build_model(cls, cfg: XModalHeadConfig, task):
        from ..petl import apply_petl

        if cfg.head != "partial":
            if active_methods(cfg):
                raise ValueError(f"--{'/--'.join(active_methods(cfg))}: PETL pieces go on the body's last blocks, "
                                 "which only --head partial holds")
            return cls(cfg, task.zeroshot_weights())
        model = cls(cfg, task.zeroshot_weights(), task.partial_tower())
        return apply_petl(model, cfg, keep_trainable=("linear",))  # no PETL flag: the blocks train whole

    def encode(self, features: Optional[Tensor] = None, tokens: Optional[Tensor] = None,
               padding: Optional[Tensor] = None) -> Tensor:
        """(B, D) un-normalised features: the given rows, then the cached hidden states through the blocks."""
        if tokens is None:
            return features
        if self.partial is None:
            raise ValueError("hidden states given to a head without the body's last blocks (use --head partial)")
        samples = self.partial(tokens, padding)
        return samples if features is None or len(features) == 0 else torch.cat([features.to(samples.dtype), samples])

    def features(self, x: Tensor) -> Tensor:
        x = F.normalize(x.float(), dim=-1)
        return x if self.adapter is None else self.adapter(x)

    def logits(self, features: Tensor, weight: Tensor = None) -> Tensor:
        w = self.linear.weight if weight is None else weight
        return self.scale * F.linear(self.features(features), w)

    def forward(self, features: Optional[Tensor] = None, weight: Tensor = None, tokens: Optional[Tensor] = None,
                padding: Optional[Tensor] = None) -> Tensor:
        return self.logits(self.encode(features, tokens, padding), weight)

    def wise_ft_weight(self, alpha: float) -> Tensor:
        return (1 - alpha) * self.linear.weight + alpha * F.normalize(self.zeroshot, dim=-1)

    def zeroshot_logits(self, features: Tensor) -> Tensor:
        """The text classifier on the raw normalised features (no adapter)."""
        return self.scale * F.linear(F.normalize(features.float(), dim=-1), self.zeroshot)
