"""Criterion ``crossmodal_loss``: the task losses of cross-modal fine-tuning (`specs/orca.md` §10).

``--loss ce`` (cross-entropy), ``weighted_ce`` (ORCA's OpenML loss: weight ``1 / class
frequency`` of the train split, weighted mean ``Σ w_y ℓ / Σ w_y`` as torch's), ``bce`` (multi-label,
``--pos-weight`` as ORCA's FSD50K/DeepSEA), ``mse`` (regression and dense targets, mean over a
sample's values). Every logged quantity is a sum over samples (loss, weight, hits, squared
errors); ``reduce_metrics`` divides, so any number of processes or accumulation steps gives the
same numbers, and ``sample_size`` (the gradient's divisor) is the summed weight.
"""


from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

LOSSES = ("ce", "weighted_ce", "bce", "mse")
TARGET_OF_LOSS = {"ce": "class", "weighted_ce": "class", "bce": "multilabel", "mse": "regression"}


@dataclass
class CrossmodalLossConfig(FairseqDataclass):
    loss: str = field(default="ce", metadata={"help": "ce | weighted_ce (1/class frequency of train) | bce | mse"})
    pos_weight: float = field(default=1.0, metadata={"help": "weight of positive labels in bce (ORCA FSD50K: 10)"})


def per_sample_loss(output: torch.Tensor, target: torch.Tensor, loss: str, pos_weight: float = 1.0) -> torch.Tensor:
    """Loss of every sample ``(B,)`` in fp32 (dense and multi-label: mean over the sample's values)."""
    output = output.float()
    if loss in ("ce", "weighted_ce"):
        return F.cross_entropy(output, target, reduction="none")
    if loss == "bce":
        weight = torch.tensor(pos_weight, device=output.device)
        values = F.binary_cross_entropy_with_logits(output, target.float(), pos_weight=weight, reduction="none")
    elif loss == "mse":
        values = (output - target.float()) ** 2
    else:
        raise ValueError(f"--loss must be one of {LOSSES}, got {loss!r}")
    return values.reshape(len(values), -1).mean(1)


@register_criterion("crossmodal_loss", dataclass=CrossmodalLossConfig)
class CrossmodalLoss(FairseqCriterion):
    def __init__(self, task, loss: str = "ce", pos_weight: float = 1.0):
        super().__init__(task)
        if loss not in LOSSES:
            raise ValueError(f"--loss must be one of {LOSSES}, got {loss!r}")
        expected = TARGET_OF_LOSS[loss]
        target = getattr(getattr(task, "cfg", None), "target", expected)
        if target != expected and not (loss == "mse" and target == "dense"):
            raise ValueError(f"--loss {loss} needs --target {expected}, the task has --target {target}")
        self.loss, self.pos_weight = loss, pos_weight

    def forward(self, model, sample, reduce: bool = True):
        output = model(**sample["net_input"])
        target = sample["target"]
        losses = per_sample_loss(output, target, self.loss, self.pos_weight)  # (B,)
        if self.loss == "weighted_ce":
            weights = self.task.class_weights.to(losses.device)[target]
        else:
            weights = torch.ones_like(losses)
        total = (losses * weights).sum()
        n = int(target.shape[0])
        log = {"loss": total.detach(), "weight": weights.sum().detach(), "nsentences": n, "ntokens": n,
               "sample_size": weights.sum().detach()}
        with torch.no_grad():
            if self.loss in ("ce", "weighted_ce"):
                log["n_correct"] = int(output.argmax(-1).eq(target).sum())
            elif self.loss == "bce":
                log["n_correct"] = int(((output > 0) == target.bool()).all(-1).sum())
            else:
                log["sq_err"] = float(((output.float() - target.float()) ** 2).reshape(n, -1).mean(1).sum())
        return total, weights.sum().detach(), log

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        weight, n = total("weight"), total("nsentences")
        metrics.log_scalar("loss", total("loss") / max(weight, 1e-12), weight, round=6)
        metrics.log_scalar("nsentences", n, 1, round=3)
        metrics.log_scalar("sample_size", weight, 1, round=3)
        if any("n_correct" in log for log in logging_outputs):
            metrics.log_scalar("_n_correct", total("n_correct"))
            metrics.log_scalar("_n_samples", n)
            metrics.log_derived("accuracy", lambda m: round(
                100.0 * float(m["_n_correct"].sum) / max(float(m["_n_samples"].sum), 1.0), 3))
        if any("sq_err" in log for log in logging_outputs):
            metrics.log_scalar("_sq_err", total("sq_err"))
            metrics.log_scalar("_n_samples", n)
            metrics.log_derived("mse", lambda m: round(float(m["_sq_err"].sum) / max(float(m["_n_samples"].sum), 1.0), 6))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
