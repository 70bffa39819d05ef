"""Criterion ``pare_mix``: PaRe's training loss on plain and mixed tokens (`specs/pare.md` §6).

Training batches built by task ``pare`` carry the source tokens, labels, k, λ, the phase and (in the
relaxed phase) the Gumbel noise. One step: embed the target, run body + head on it (``out``), score
target and source tokens with the gate, replace k target tokens (relaxed or deterministic), run the
body again on the mixed tokens (``out_mix`` from the target head, ``out_src`` from the source
head), and combine with ``pare_losses.pare_loss``. Logged as sums (reduced exactly over ranks):
the total, ``pare_target`` / ``pare_mix`` / ``pare_source``, ``pare_k``, ``pare_lam`` and the mean
gate scores. Validation batches (no source) and ORCA's align batches go to ``orca_align`` /
``crossmodal_loss`` unchanged, so evaluation scores the plain target path only.

Parameters without a gradient on some steps, handled explicitly: in the deterministic phase the
gate only ranks tokens, so its scores enter the loss with weight 0 (a zero gradient, and every
parameter is in the graph for DDP without ``--find-unused-parameters``); the source head is used
on every PaRe step (the source batch always has the target batch's size).
"""

from __future__ import annotations

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion

from ..models.crossmodal.pare import replace_deterministic, replace_relaxed
from .crossmodal_loss import per_sample_loss
from .orca_align import OrcaAlignConfig, OrcaAlignCriterion
from .pare_losses import pare_loss, source_class_loss

PARE_KEY = "pare"
TERMS = ("pare_target", "pare_mix", "pare_source")


@register_criterion("pare_mix", dataclass=OrcaAlignConfig)
class PareMixCriterion(OrcaAlignCriterion):
    def forward(self, model, sample, reduce: bool = True):
        if PARE_KEY not in sample:
            return super().forward(model, sample, reduce)
        return self.pare_forward(model, sample["net_input"]["x"], sample["target"], sample[PARE_KEY])

    def _task_loss(self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return (per_sample_loss(output, target, self.loss, self.pos_weight) * weights).sum()

    def pare_forward(self, model, x: torch.Tensor, target: torch.Tensor, p: dict):
        tokens, mask = model.embed(x)  # (B, N, d)
        out = model.head(model.encode(tokens, mask), mask)
        src = p["tokens"].to(tokens.dtype)  # (B, Ns, d)
        g_t, g_s = model.gate(tokens), model.gate(src)
        k = p["k"]
        if p["phase"] == "relaxed":
            mixed = replace_relaxed(tokens, src, g_t, g_s, p["noise_t"], p["noise_s"], k, p["tau"], p["replace"])
            touch = tokens.new_zeros(())
        else:
            mixed = replace_deterministic(tokens, src, g_t, g_s, k, p["replace"])
            touch = (g_t.sum() + g_s.sum()) * 0.0  # the gate only ranks here: in the graph, zero gradient
        hidden = model.encode(mixed, mask)
        out_mix, out_src = model.head(hidden, mask), model.source_head(hidden, mask)

        if self.loss == "weighted_ce":
            weights = self.task.class_weights.to(out.device)[target]
        else:
            weights = torch.ones(target.shape[0], device=out.device)
        terms = pare_loss(self._task_loss(out, target, weights), self._task_loss(out_mix, target, weights),
                          source_class_loss(out_src.float(), p["labels"]), p["lam"], p["aux_weight"])
        loss = terms.total + touch
        n = int(target.shape[0])
        log = {"loss": loss.detach(), "weight": weights.sum().detach(), "nsentences": n, "ntokens": n,
               "sample_size": weights.sum().detach(), "pare_steps": n, "pare_k": k * n, "pare_lam": p["lam"] * n,
               "pare_target": terms.target.detach(), "pare_mix": terms.mix.detach(),
               "pare_source": terms.source.detach(),
               "pare_gate_t": float(g_t.detach().mean()) * n, "pare_gate_s": float(g_s.detach().mean()) * n}
        with torch.no_grad():
            if self.loss in ("ce", "weighted_ce"):
                log["n_correct"] = int(out.argmax(-1).eq(target).sum())
            elif self.loss == "bce":
                log["n_correct"] = int(((out > 0) == target.bool()).all(-1).sum())
            else:
                log["sq_err"] = float(((out.float() - target.float()) ** 2).reshape(n, -1).mean(1).sum())
        return loss, weights.sum().detach(), log

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)

        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        n = total("pare_steps")
        if n == 0:
            return
        weight = total("weight")
        for key in TERMS:
            metrics.log_scalar(key, total(key) / max(weight, 1e-12), weight, round=6)
        for key in ("pare_k", "pare_lam", "pare_gate_t", "pare_gate_s"):
            metrics.log_scalar(key, total(key) / n, n, round=4)
