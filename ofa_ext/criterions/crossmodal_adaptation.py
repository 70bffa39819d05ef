"""Criterion ``xmodal_ce``: cross-entropy over the mixed batch of cross-modal adaptation.

Text and image rows count equally (Lin et al.). Logged as sums (reduced exactly over ranks): the
loss of each half, their row counts, hits on the image rows; in evaluation also the hits of the
WiSE-FT head (``--wise-ft-alpha`` of the task) and of the zero-shot text classifier.
"""

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass


@register_criterion("xmodal_ce", dataclass=FairseqDataclass)
class XModalCrossEntropy(FairseqCriterion):
    def forward(self, model, sample, reduce: bool = True):
        features, target, is_text = sample["net_input"]["features"], sample["target"], sample["is_text"]
        logits = model(features)
        losses = F.cross_entropy(logits.float(), target, reduction="none")  # (B,)
        loss = losses.sum()
        image = ~is_text
        n = int(target.numel())
        log = {"loss": loss.detach(), "loss_text": losses[is_text].sum().detach(),
               "loss_image": losses[image].sum().detach(), "n_text": int(is_text.sum()), "n_image": int(image.sum()),
               "nsentences": n, "ntokens": n, "sample_size": n}
        with torch.no_grad():
            log["n_correct"] = int(logits.argmax(-1)[image].eq(target[image]).sum())
            if not model.training:
                alpha = self.task.cfg.wise_ft_alpha
                wise = model(features, weight=model.wise_ft_weight(alpha))
                log["n_correct_wiseft"] = int(wise.argmax(-1)[image].eq(target[image]).sum())
                log["n_correct_zeroshot"] = int(model.zeroshot_logits(features).argmax(-1)[image].eq(target[image]).sum())
        return loss, n, log

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        n, n_text, n_image = total("nsentences"), total("n_text"), total("n_image")
        metrics.log_scalar("loss", total("loss") / max(n, 1), n, round=6)
        if n_text:
            metrics.log_scalar("loss_text", total("loss_text") / n_text, n_text, round=6)
        metrics.log_scalar("loss_image", total("loss_image") / max(n_image, 1), n_image, round=6)
        metrics.log_scalar("_n_image", n_image)
        for key, name in (("n_correct", "accuracy"), ("n_correct_wiseft", "accuracy_wiseft"),
                          ("n_correct_zeroshot", "accuracy_zeroshot")):
            if any(key in log for log in logging_outputs):
                metrics.log_scalar(f"_{key}", total(key))
                metrics.log_derived(name, lambda m, k=key: round(
                    100.0 * float(m[f"_{k}"].sum) / max(float(m["_n_image"].sum), 1.0), 3))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
