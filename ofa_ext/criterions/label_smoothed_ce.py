"""OFA's training loss: label-smoothed cross entropy with OFA's adjustments.

Registered as `adjust_label_smoothed_cross_entropy`, the name OFA's run scripts use. Loss terms are
sums over target tokens; `reduce_metrics` divides by the summed sample size, so the logged loss is
exact over any number of GPUs / accumulation steps. Losses are logged in nats (as OFA does).
"""

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from ..utils.options import parse_range


@dataclass
class AdjustLabelSmoothedCrossEntropyConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.1, metadata={"help": "epsilon for label smoothing, 0 = no smoothing"})
    report_accuracy: bool = field(default=False, metadata={"help": "log token accuracy"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "ignore the first N target tokens"})
    ignore_eos: bool = field(default=False, metadata={"help": "leave the eos step out of the loss"})
    sentence_avg: bool = field(default=False, metadata={"help": "normalise by sentences instead of tokens"})
    drop_worst_ratio: float = field(
        default=0.0, metadata={"help": "drop this fraction of the highest-loss tokens (after --drop-worst-after)"}
    )
    drop_worst_after: int = field(default=0, metadata={"help": "start dropping worst tokens after N updates"})
    constraint_range: Optional[str] = field(
        default=None,
        metadata={"help": "'a,b': only the 4 special symbols and ids in [a, b) get probability (e.g. the bins)"},
    )


def smoothed_nll(
    lprobs: torch.Tensor, target: torch.Tensor, epsilon: float, allowed: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token smoothed loss and nll.

    `lprobs` [N, V] log-probabilities, `target` [N]. With `allowed` (bool [V]) the smoothing mass is
    spread over the allowed symbols only. loss = (1 - eps - eps_i) * nll + eps_i * sum_v(-lprobs[v]).
    """
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if allowed is None:
        smooth = -lprobs.sum(-1)
        n_classes = lprobs.size(-1)
        eps_i = epsilon / (n_classes - 1)
    else:
        smooth = -lprobs.masked_fill(~allowed, 0.0).sum(-1)
        eps_i = epsilon / (int(allowed.sum()) - 1 + 1e-6)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss, nll


@register_criterion("adjust_label_smoothed_cross_entropy", dataclass=AdjustLabelSmoothedCrossEntropyConfig)
class AdjustLabelSmoothedCrossEntropy(FairseqCriterion):
    def __init__(self, task, label_smoothing, report_accuracy=False, ignore_prefix_size=0, ignore_eos=False,
                 sentence_avg=False, drop_worst_ratio=0.0, drop_worst_after=0, constraint_range=None):
        super().__init__(task)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= drop_worst_ratio < 1.0:
            raise ValueError(f"--drop-worst-ratio must be in [0, 1), got {drop_worst_ratio}")
        self.eps = label_smoothing
        self.report_accuracy = report_accuracy
        self.ignore_prefix_size = ignore_prefix_size
        self.ignore_eos = ignore_eos
        self.sentence_avg = sentence_avg
        self.drop_worst_ratio = drop_worst_ratio
        self.drop_worst_after = drop_worst_after
        self.constraint_range = parse_range(constraint_range, "--constraint-range", len(task.target_dictionary))
        self.padding_idx = task.target_dictionary.pad()
        self.eos_idx = task.target_dictionary.eos()

    def _allowed_mask(self, vocab_size: int, device) -> Optional[torch.Tensor]:
        if self.constraint_range is None:
            return None
        start, end = self.constraint_range
        allowed = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        allowed[:4] = True
        allowed[start:end] = True
        return allowed

    def token_losses(self, model, net_output, sample):
        """(loss, nll, target, lprobs) per kept target token, padding removed."""
        logits = net_output[0]
        target = sample["target"]
        if self.ignore_prefix_size > 0:
            logits = logits[:, self.ignore_prefix_size:]
            target = target[:, self.ignore_prefix_size:]
        allowed = self._allowed_mask(logits.size(-1), logits.device)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        lprobs = F.log_softmax(logits.float(), dim=-1)
        keep = target.ne(self.padding_idx)
        if self.ignore_eos:
            keep &= target.ne(self.eos_idx)
        lprobs, target = lprobs[keep], target[keep]
        if allowed is not None:
            lprobs = lprobs.masked_fill(~allowed, 0.0)
        loss, nll = smoothed_nll(lprobs, target, self.eps, allowed)
        return loss, nll, target, lprobs

    def forward(self, model, sample, update_num=0, reduce=True):
        net_output = model(**sample["net_input"])
        loss, nll, target, lprobs = self.token_losses(model, net_output, sample)
        ntokens = target.numel()
        if self.drop_worst_ratio > 0 and update_num > self.drop_worst_after and model.training:
            n_keep = max(1, int(ntokens * (1 - self.drop_worst_ratio)))
            loss, kept = torch.topk(loss, n_keep, largest=False)
            nll, target, lprobs = nll[kept], target[kept], lprobs[kept]
            ntokens = n_keep
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.sum().data,
            "nll_loss": nll.sum().data,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            logging_output["n_correct"] = int(lprobs.argmax(-1).eq(target).sum())
            logging_output["total"] = ntokens
        return loss.sum(), sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size = total("sample_size")
        denom = max(sample_size, 1)
        metrics.log_scalar("loss", total("loss") / denom, sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / denom, sample_size, round=3)
        metrics.log_derived("ppl", lambda m: round(math.exp(min(m["nll_loss"].avg, 50.0)), 3))
        metrics.log_scalar("ntokens", total("ntokens"), 1, round=3)
        metrics.log_scalar("nsentences", total("nsentences"), 1, round=3)
        metrics.log_scalar("sample_size", sample_size, 1, round=3)
        n_total = total("total")
        if n_total > 0:
            metrics.log_scalar("_n_correct", total("n_correct"))
            metrics.log_scalar("_total", n_total)
            metrics.log_derived(
                "accuracy", lambda m: round(100.0 * float(m["_n_correct"].sum) / max(float(m["_total"].sum), 1.0), 3)
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
