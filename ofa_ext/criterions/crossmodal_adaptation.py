"""Criterion ``xmodal_ce``: cross-entropy over the mixed batch of cross-modal adaptation.

Text and image rows count equally (Lin et al.); the loss is the batch mean (every batch has the
same ``--batch-size`` rows, so the mean over ranks and ``--update-freq`` steps is the global mean). A batch holds its ``n_text`` text rows first, then
the image rows (``features_dataset.two_stream_batches``), so the halves are slices, not masks.
Logged as sums (reduced exactly over ranks): the loss of each half, their row counts, hits on the
image rows; in evaluation also the hits of the WiSE-FT head (``--wise-ft-alpha`` of the task) and
of the zero-shot text classifier. The sums leave the device in one transfer per batch; an accuracy is
logged as ``100·hits/n_image`` weighted by ``n_image``, so fairseq's weighted mean over updates and
ranks is exactly ``100·Σ hits / Σ n_image``.
"""

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

ACCURACIES = (("n_correct", "accuracy"), ("n_correct_wiseft", "accuracy_wiseft"),
              ("n_correct_zeroshot", "accuracy_zeroshot"))


def _hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1).eq(target).sum(dtype=torch.float32)


@register_criterion("xmodal_ce", dataclass=FairseqDataclass)
class XModalCrossEntropy(FairseqCriterion):
    def forward(self, model, sample, reduce: bool = True):
        target, n_text = sample["target"], int(sample["n_text"])
        features = model.encode(**sample["net_input"])  # (B, D): partial heads run their blocks here
        logits = model.logits(features)
        losses = F.cross_entropy(logits.float(), target, reduction="none")  # (B,)
        n = int(target.numel())
        # the batch mean with sample size 1 (fairseq divides the gradients by the summed sample sizes):
        # the same gradient as the sum over n rows, but on a CPU the tiny softmax terms of a saturated
        # head underflow to zero instead of lingering as slow denormals (1.4x faster backward, 1000 classes)
        loss = losses.mean()
        flat, image_target = losses.detach(), target[n_text:]  # the statistics need no graph
        sums = [flat[:n_text].sum(), flat[n_text:].sum(), _hits(logits.detach()[n_text:], image_target)]
        if not model.training:  # fairseq's valid_step runs under no_grad
            image = features[n_text:]
            wise = model.logits(image, weight=model.wise_ft_weight(self.task.cfg.wise_ft_alpha))
            sums += [_hits(wise, image_target), _hits(model.zeroshot_logits(image), image_target)]
        values = torch.stack(sums).tolist()  # one host transfer per batch
        keys = ("loss_text", "loss_image") + tuple(k for k, _ in ACCURACIES)
        log = dict(zip(keys, values), loss=values[0] + values[1], n_text=n_text, n_image=n - n_text, nsentences=n,
                   ntokens=n)
        return loss, 1, log

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        n, n_text, n_image = total("nsentences"), total("n_text"), total("n_image")
        metrics.log_scalar("loss", total("loss") / max(n, 1), n, round=6)
        if n_text:
            metrics.log_scalar("loss_text", total("loss_text") / n_text, n_text, round=6)
        if n_image:
            metrics.log_scalar("loss_image", total("loss_image") / n_image, n_image, round=6)
            for key, name in ACCURACIES:
                if key in logging_outputs[0]:
                    metrics.log_scalar(name, 100.0 * total(key) / n_image, n_image, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
