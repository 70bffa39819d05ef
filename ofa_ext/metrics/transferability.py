"""Estimating which source prompt transfers best to a target task (``specs/prompt_transfer.md`` §4).

Three families of estimators, all pure functions of prompt tensors ``(L, d)``:

* **prompt similarity** — SPoT's average cosine and the released code's variants;
* **model stimulation** — overlap of the binarised FFN activations that each prompt causes in a
  frozen body (the activations are collected by :func:`ffn_activation_pattern`);
* **modality gap + task gap** — MMD between a source prompt and the target's input tokens, and
  the distance after a *universal projector* trained on all source prompts against the target
  prompt; :func:`combined_score` mixes them as ``λ_t·S_task − λ_m·φ(MMD)``.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROMPT_METRICS = ("cosine_average", "cosine_max", "cosine_individual", "euclidean_average")
PHIS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda m: m,
    "log": lambda m: np.log(np.maximum(m, 1e-12)),  # a biased MMD is >= 0; 0 itself would be -inf
    "sinh": np.sinh,
}
PROJECTOR_SEEDS = (42, 44, 100)


def _check_prompt(name: str, p: Tensor) -> Tensor:
    if p.dim() != 2:
        raise ValueError(f"{name}: expected a prompt of shape (tokens, width), got {tuple(p.shape)}")
    return p.float()


def prompt_similarity(src: Tensor, tgt: Tensor, metric: str = "cosine_average") -> float:
    """Similarity of two prompts ``(L, d)``; larger = more transferable.

    ``cosine_average`` (SPoT) compares token means, ``cosine_max`` token-wise maxima,
    ``cosine_individual`` averages all token-pair cosines, ``euclidean_average`` is minus the
    distance between token means.
    """
    s, t = _check_prompt("source prompt", src), _check_prompt("target prompt", tgt)
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"prompt widths differ: source {s.shape[1]}, target {t.shape[1]}")
    if metric == "cosine_average":
        return float(F.cosine_similarity(s.mean(0), t.mean(0), dim=0))
    if metric == "cosine_max":
        return float(F.cosine_similarity(s.max(0).values, t.max(0).values, dim=0))
    if metric == "cosine_individual":
        return float((F.normalize(s, dim=1) @ F.normalize(t, dim=1).T).mean())
    if metric == "euclidean_average":
        return -float(torch.linalg.vector_norm(s.mean(0) - t.mean(0)))
    raise ValueError(f"prompt metric {metric!r}: expected one of {', '.join(PROMPT_METRICS)}")


# ---------------------------------------------------------------------------------------------
# model stimulation
def ffn_activation_pattern(run: Callable[[], object], ffn_modules: Sequence[nn.Module],
                           position: int) -> Tensor:
    """Binary FFN activation pattern at one sequence position, concatenated over ``ffn_modules``.

    ``run`` performs one forward pass (batch 1) of a frozen body; each module in ``ffn_modules`` is
    the FFN's first projection (or its activation). Hooking the projection's output is enough: GELU
    and ReLU are positive exactly where their input is, so ``> 0`` binarises both alike.
    """
    captured: List[Tensor] = []

    def grab(_module: nn.Module, _inputs: object, out: Tensor) -> None:
        hidden = out[0] if out.dim() == 3 else out  # (T, F) after dropping the batch of 1
        captured.append((hidden[position] > 0).float())

    handles = [m.register_forward_hook(grab) for m in ffn_modules]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    if len(captured) != len(ffn_modules):
        raise RuntimeError(f"model stimulation: {len(captured)} of {len(ffn_modules)} FFN modules ran")
    return torch.cat(captured)


def stimulation_similarity(pattern_a: Tensor, pattern_b: Tensor) -> float:
    """Cosine of two binary activation patterns (overlap normalised by the activation counts)."""
    return float(F.cosine_similarity(pattern_a.float(), pattern_b.float(), dim=0, eps=1e-12))


# ---------------------------------------------------------------------------------------------
# modality gap
def modality_gap(prompt: Tensor, target_tokens: Tensor, **mmd_options: float) -> float:
    """MMD between a prompt's tokens ``(L, d)`` and target input tokens ``(N, d)`` (ORCA's kernel).

    Default of the spec (§4.4): input-space comparison against the target's token embeddings; which
    representations enter is the caller's choice and is recorded in the estimator's output.
    """
    return float(modality_gaps([prompt], target_tokens, **mmd_options)[0])


def modality_gaps(prompts: Sequence[Tensor], target_tokens: Tensor, **mmd_options: float) -> np.ndarray:
    """:func:`modality_gap` of every prompt against the same target tokens (their distances computed once)."""
    from .distances import mmd_to_target  # the project's one MMD

    x = target_tokens.float().reshape(-1, target_tokens.shape[-1])
    ps = [_check_prompt("source prompt", p) for p in prompts]
    for p in ps:
        if p.shape[1] != x.shape[1]:
            raise ValueError(f"modality gap: prompt width {p.shape[1]} differs from target token width {x.shape[1]}")
    return mmd_to_target(ps, x, **mmd_options).double().numpy()


# ---------------------------------------------------------------------------------------------
# task gap: the universal projector
class UniversalProjector(nn.Module):
    """One projection shared by every source prompt (and optionally one for the target)."""

    def __init__(self, width: int, out_dim: int, dropout: float = 0.0, project_target: bool = False):
        super().__init__()
        if not project_target and out_dim != width:
            raise ValueError(f"universal projector: out_dim {out_dim} must equal the width {width} "
                             "when the target is not projected")
        self.source = nn.Sequential(nn.Linear(width, out_dim), nn.Dropout(dropout))
        self.target = nn.Sequential(nn.Linear(width, out_dim), nn.Dropout(dropout)) if project_target else nn.Identity()


def _reduce_tokens(p: Tensor, reduction: str) -> Tensor:
    return p.mean(-2) if reduction == "mean" else p.max(-2).values


def _augment_sources(sources: Tensor, noise: float, mix: bool, gen: torch.Generator) -> Tensor:
    """The released training-time augmentations: Gaussian noise, token mixing, source order."""
    s = sources
    if noise > 0:
        s = s + torch.randn(s.shape, generator=gen) * (noise * sources.std())
    if mix:
        flat = s.reshape(-1, s.shape[-1])
        s = flat[torch.randperm(flat.shape[0], generator=gen)].reshape(s.shape)
    return s[torch.randperm(s.shape[0], generator=gen)]


def train_universal_projector(sources: Tensor, target: Tensor, *, out_dim: Optional[int] = None,
                              steps: int = 100, lr: float = 1e-3, weight_decay: float = 0.0,
                              dropout: float = 0.0, project_target: bool = False,
                              loss_metric: str = "euclidean", reduction: str = "mean",
                              src_noise: float = 0.0, src_mix: bool = False, seed: int = 42,
                              token_level: bool = False) -> UniversalProjector:
    """Fit the projector with full-batch Adam: sources ``(S, L, d)`` pulled towards the target ``(L', d)``.

    With mean reduction and no dropout the projector is affine per token, so the token mean can be
    taken first (exactly the same loss, ``L`` times fewer multiplies); ``token_level=True`` keeps
    the per-token path, the reference it is tested against.
    """
    if sources.dim() != 3:
        raise ValueError(f"source prompts: expected (sources, tokens, width), got {tuple(sources.shape)}")
    if loss_metric not in ("euclidean", "cosine") or reduction not in ("mean", "max"):
        raise ValueError(f"loss metric {loss_metric!r} / reduction {reduction!r}: expected euclidean|cosine, mean|max")
    gen = torch.Generator().manual_seed(seed)
    width = sources.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        proj = UniversalProjector(width, out_dim or width, dropout, project_target)
    opt = torch.optim.Adam(proj.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    src, tgt = sources.float(), _check_prompt("target prompt", target).float()
    fold = reduction == "mean" and dropout == 0 and not token_level
    # without token-level augmentations the folded sources are the same means every step
    means = src.mean(-2) if fold and src_noise == 0 and not src_mix else None  # (S, d)
    proj.train()
    for _ in range(steps):
        if means is not None:
            s = proj.source(means[torch.randperm(means.shape[0], generator=gen)])  # (S, o)
        else:
            s = _augment_sources(src, src_noise, src_mix, gen)
            s = proj.source(s.mean(-2)) if fold else _reduce_tokens(proj.source(s), reduction)  # (S, o)
        t = proj.target(tgt.mean(0)) if fold else _reduce_tokens(proj.target(tgt), reduction)  # (o,)
        if loss_metric == "euclidean":
            loss = torch.linalg.vector_norm(s - t, dim=-1).mean()
        else:
            loss = -F.cosine_similarity(s, t.expand_as(s), dim=-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return proj.eval()


def task_gap_scores(sources: Tensor, target: Tensor, *, seeds: Iterable[int] = PROJECTOR_SEEDS,
                    eval_metric: str = "cosine_average", **train_options) -> np.ndarray:
    """Per-source task-gap score (larger = closer), averaged over one fresh projector per seed."""
    # metrics of token means commute with the (eval-mode, affine) projector: project the means only
    fold = eval_metric in ("cosine_average", "euclidean_average") and not train_options.get("token_level")
    reduce = (lambda p: p.mean(0, keepdim=True)) if fold else (lambda p: p)
    per_seed = []
    for seed in seeds:
        proj = train_universal_projector(sources, target, seed=seed, **train_options)
        with torch.no_grad():
            t = proj.target(reduce(target.float()))
            per_seed.append([prompt_similarity(proj.source(reduce(s.float())), t, eval_metric) for s in sources])
    return np.asarray(per_seed, dtype=np.float64).mean(0)


def combined_score(task_scores: Sequence[float], mmds: Sequence[float], *, lambda_t: float = 1.0,
                   lambda_m: float = 1.0, phi: str = "identity") -> np.ndarray:
    """``λ_t·S_task − λ_m·φ(MMD)`` per source (λ_m = 0: task gap only; λ_t = 0: modality gap only)."""
    if phi not in PHIS:
        raise ValueError(f"phi {phi!r}: expected one of {', '.join(PHIS)}")
    s = np.asarray(task_scores, dtype=np.float64)
    m = np.asarray(mmds, dtype=np.float64)
    if s.shape != m.shape:
        raise ValueError(f"combined score: {s.size} task scores but {m.size} MMD values")
    return lambda_t * s - lambda_m * PHIS[phi](m)



ESTIMATORS = ("avg_cosine", "stimulation", "modality_gap", "task_gap", "combined")


def estimate_sources(sources: Dict[str, Tensor], target_prompt: Tensor, *,
                     target_tokens: Optional[Tensor] = None,
                     stimulation: Optional[Callable[[Tensor], Tensor]] = None,
                     estimators: Sequence[str] = ("avg_cosine", "modality_gap", "task_gap", "combined"),
                     projector: Optional[dict] = None, mmd_options: Optional[dict] = None,
                     lambda_t: float = 1.0, lambda_m: float = 1.0, phi: str = "identity") -> Dict[str, np.ndarray]:
    """Score every source prompt for one target; each estimator's array is "larger = better".

    ``modality_gap`` is reported as ``−MMD`` so that all columns rank the same way;
    ``stimulation`` maps a prompt to its binary activation pattern (see :func:`ffn_activation_pattern`).
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"--estimators {','.join(unknown)}: expected a subset of {','.join(ESTIMATORS)}")
    names = list(sources)
    out: Dict[str, np.ndarray] = {}
    if "avg_cosine" in estimators:
        out["avg_cosine"] = np.array([prompt_similarity(sources[n], target_prompt) for n in names])
    if "stimulation" in estimators:
        if stimulation is None:
            raise ValueError("the stimulation estimator needs a body (--body)")
        t = stimulation(target_prompt)
        out["stimulation"] = np.array([stimulation_similarity(stimulation(sources[n]), t) for n in names])
    mmds = None
    if "modality_gap" in estimators or "combined" in estimators:
        if target_tokens is None:
            raise ValueError("the modality_gap/combined estimators need the target's input tokens (--target-tokens)")
        mmds = modality_gaps([sources[n] for n in names], target_tokens, **(mmd_options or {}))
        if "modality_gap" in estimators:
            out["modality_gap"] = -mmds
    if "task_gap" in estimators or "combined" in estimators:
        shapes = {tuple(sources[n].shape) for n in names}
        if len(shapes) != 1:
            raise ValueError(f"the task gap trains one projector on all source prompts: they need one shape, got {sorted(shapes)}")
        stacked = torch.stack([sources[n].float() for n in names])
        task = task_gap_scores(stacked, target_prompt, **(projector or {}))
        if "task_gap" in estimators:
            out["task_gap"] = task
        if "combined" in estimators:
            out["combined"] = combined_score(task, mmds, lambda_t=lambda_t, lambda_m=lambda_m, phi=phi)
    return out
