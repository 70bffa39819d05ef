"""Diagonal Fisher information of a named subset of parameters (π-Tuning step 2, "task embedding").

A task is embedded by the diagonal Fisher of its expert's PETL pieces. Two families of estimator sit
behind one function, :func:`fisher_diagonal`:

``"pi_tuning"`` (default, reproduces π-Tuning's ``task_emb.py``)
    For every mini-batch b, ``g_b`` = gradient of the batch's **summed** training loss; accumulate
    ``S = Σ_b g_b²`` (element-wise) and divide by ``n_batches · batch_size · world_size``, where
    ``n_batches`` counts the batches of one rank and ``batch_size`` is the nominal per-rank batch size
    (``specs/pi_tuning.md`` §5.1). Here ``S`` is summed over ranks and divided by
    ``(Σ_ranks n_batches) · batch_size``, which is the same number whenever ranks see equally many
    batches (fairseq's iterators guarantee that). This is not a per-sample Fisher: cross terms between
    the samples of a batch stay in ``g_b²``. Computed in fp32, with ``torch.autograd.grad`` only: no
    optimiser step and no ``.grad`` is written.

``"empirical"`` / ``"model"`` (the per-sample diagonal Fisher)
    ``F = mean over samples of (∂ log p(y|x)/∂θ)²`` with the gold label (empirical Fisher) or with a
    label drawn from the model, ``y ~ p(·|x)`` (the true Fisher, in expectation). Per-sample gradients
    are vectorised with ``torch.func`` (``functional_call`` + ``vmap(grad)``); ``vectorized=False`` runs
    the per-sample loop kept as the reference. Only the selected parameters are functional inputs: the
    frozen backbone is read from the module as constants, so its size does not matter.

The objective is a user function ``objective(model, batch)`` so that seq2seq models work:

* for ``"pi_tuning"`` it returns the training loss of the batch (a scalar, or per-sample losses that
  are summed) — for OFA the label-smoothed cross-entropy summed over target tokens;
* for the per-sample estimators it returns per-sample log-likelihoods, shape ``[B]`` (the sign does
  not matter once squared, so per-sample losses work too). It is called on one-sample batches
  (leading dimension 1): tensors of the batch whose first dimension equals the batch size are sliced
  (or ``vmap``-ed); every other leaf (ints, other tensors) is passed unchanged.

Modes: ``mode="eval"`` (default) gives deterministic numbers; ``mode="train"`` is π-Tuning's setting
(dropout, drop path and BatchNorm batch statistics active — BatchNorm running statistics then change,
which is the only side effect). The per-sample estimators are meant for eval mode: ``vmap`` cannot run
BatchNorm with batch statistics (OFA's ResNet has BatchNorm), so vectorised per-sample estimation in
train mode is refused when a BatchNorm layer would be in training mode; dropout in train mode is
vmapped with ``randomness="different"``. The previous train/eval flag of every module is restored.

Distributed: when ``torch.distributed`` is initialised every rank passes its own share of the data;
partial sums and counts are all-reduced (summed), so every rank returns the global estimate and the
per-sample mean uses the global sample count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..utils.files import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

ESTIMATORS = ("pi_tuning", "empirical", "model")
MODES = ("eval", "train", "keep")
TASK_EMBEDDING_FORMAT = "ofa_ext.task_embedding"
TASK_EMBEDDING_VERSION = "1"

Objective = Callable[[nn.Module, Any], Tensor]
SampleFn = Callable[[nn.Module, Any, Optional[torch.Generator]], Any]


@dataclass
class FisherEstimate:
    """A diagonal Fisher per parameter tensor plus the counts needed to interpret it."""

    fisher: Dict[str, Tensor]
    estimator: str
    n_samples: int  # global number of samples seen
    n_batches: int  # global number of batches seen
    divisor: float  # the accumulated squared gradients were divided by this
    normalisation: str  # the divisor in words
    mode: str
    world_size: int = 1

    def meta(self) -> Dict[str, Any]:
        """The JSON-serialisable description saved next to the tensors."""
        d = asdict(self)
        d.pop("fisher")
        return d


# ----------------------------------------------------------------------------------------- helpers


def stable_name(name: str) -> str:
    """Parameter name without wrapper prefixes (DDP / fairseq proxies add ``module.``)."""
    while name.startswith("module."):
        name = name[len("module."):]
    return name


def select_parameters(model: nn.Module, param_names: Optional[Iterable[str]] = None) -> Dict[str, nn.Parameter]:
    """The parameters to differentiate: the named ones, or every ``requires_grad`` one by default."""
    named = dict(model.named_parameters())
    if param_names is None:
        chosen = {n: p for n, p in named.items() if p.requires_grad}
        if not chosen:
            raise ValueError("model has no parameter with requires_grad=True; pass param_names explicitly")
        return chosen
    wanted = list(param_names)
    missing = [n for n in wanted if n not in named]
    if missing:
        raise KeyError(f"param_names not found in the model: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if not wanted:
        raise ValueError("param_names is empty: select at least one parameter")
    return {n: named[n] for n in wanted}


def infer_batch_size(batch: Any) -> int:
    """Samples in a batch: fairseq's ``nsentences`` if present, else dim 0 of the first tensor leaf."""
    if isinstance(batch, Mapping) and isinstance(batch.get("nsentences"), int):
        return int(batch["nsentences"])
    for leaf in tree_flatten(batch)[0]:
        if isinstance(leaf, Tensor) and leaf.dim() >= 1:
            return int(leaf.shape[0])
    raise ValueError("cannot infer the batch size: the batch has no tensor with a batch dimension; pass batch_size_fn")


@contextlib.contextmanager
def _grad_only(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Temporarily make exactly ``names`` require grad, so backward never touches the frozen rest."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    chosen = set(names)
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in chosen)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])


@contextlib.contextmanager
def _mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Set train/eval for the pass and restore every module's own flag afterwards."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    saved = {m: m.training for m in model.modules()}
    try:
        if mode != "keep":
            model.train(mode == "train")
        yield
    finally:
        for m, flag in saved.items():
            m.training = flag


def _split_batch(batch: Any, bsz: int) -> Tuple[List[Any], Any, List[int]]:
    """Flatten a batch and find the leaves that carry the batch dimension."""
    leaves, spec = tree_flatten(batch)
    idx = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor) and leaf.dim() >= 1 and leaf.shape[0] == bsz]
    if not idx:
        raise ValueError(f"no tensor in the batch has a leading dimension of the batch size {bsz}")
    return leaves, spec, idx


def _rebuild(leaves: List[Any], spec: Any, idx: List[int], batched: Sequence[Tensor]) -> Any:
    new = list(leaves)
    for i, t in zip(idx, batched):
        new[i] = t
    return tree_unflatten(new, spec)


def _single_output(out: Tensor, where: str) -> Tensor:
    if out.numel() != 1:
        raise ValueError(
            f"objective must return one log-likelihood per sample (shape [B]); on a one-sample batch ({where}) "
            f"it returned shape {tuple(out.shape)}"
        )
    return out.reshape(())


class _Objective(nn.Module):
    """Lets ``functional_call`` swap the selected parameters while the user's objective runs."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Any) -> Tensor:
        return self.objective(self.model, batch)


# ------------------------------------------------------------------------------------- per-batch work


def _batch_sq_grads(model: nn.Module, params: Dict[str, nn.Parameter], objective: Objective, batch: Any) -> List[Optional[Tensor]]:
    """π-Tuning: squared gradient of the summed mini-batch loss."""
    out = objective(model, batch)
    loss = out.sum() if out.dim() > 0 else out
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return [None if g is None else g.detach().float().pow(2) for g in grads]


def _loop_sq_grads(model: nn.Module, params: Dict[str, nn.Parameter], objective: Objective, batch: Any, bsz: int) -> List[Optional[Tensor]]:
    """Reference per-sample path: one forward/backward per sample, squares summed."""
    leaves, spec, idx = _split_batch(batch, bsz)
    acc: List[Optional[Tensor]] = [None] * len(params)
    for s in range(bsz):
        one = _rebuild(leaves, spec, idx, [leaves[i][s : s + 1] for i in idx])
        ll = _single_output(objective(model, one), f"sample {s}")
        grads = torch.autograd.grad(ll, list(params.values()), allow_unused=True)
        for k, g in enumerate(grads):
            if g is not None:
                sq = g.detach().float().pow(2)
                acc[k] = sq if acc[k] is None else acc[k] + sq
    return acc


def _vmap_sq_grads(
    model: nn.Module,
    params: Dict[str, nn.Parameter],
    objective: Objective,
    batch: Any,
    bsz: int,
    chunk_size: Optional[int],
    randomness: str,
) -> List[Optional[Tensor]]:
    """Vectorised per-sample path: ``vmap(grad)`` over the batch dimension, squares summed."""
    from torch.func import functional_call, grad, vmap

    leaves, spec, idx = _split_batch(batch, bsz)
    wrapper = _Objective(model, objective)
    names = list(params)

    def one_sample(theta: Dict[str, Tensor], *batched: Tensor) -> Tensor:
        sample = _rebuild(leaves, spec, idx, [t.unsqueeze(0) for t in batched])
        out = functional_call(wrapper, {"model." + n: v for n, v in theta.items()}, (sample,))
        return _single_output(out, "vmap")

    theta = {n: p.detach() for n, p in params.items()}
    per_sample = vmap(
        grad(one_sample), in_dims=(None,) + (0,) * len(idx), chunk_size=chunk_size, randomness=randomness
    )(theta, *[leaves[i] for i in idx])
    return [per_sample[n].float().pow(2).sum(0) for n in names]


# ------------------------------------------------------------------------------------------ the API


def _world() -> Tuple[bool, int]:
    on = dist.is_available() and dist.is_initialized()
    return on, (dist.get_world_size() if on else 1)


def fisher_diagonal(
    model: nn.Module,
    batches: Iterable[Any],
    objective: Objective,
    *,
    estimator: str = "pi_tuning",
    param_names: Optional[Iterable[str]] = None,
    vectorized: bool = True,
    sample_fn: Optional[SampleFn] = None,
    mode: str = "eval",
    batch_size: Optional[int] = None,
    batch_size_fn: Callable[[Any], int] = infer_batch_size,
    chunk_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> FisherEstimate:
    """Diagonal Fisher of the selected parameters over ``batches`` (see the module docstring).

    Args:
        model: any module; only ``param_names`` (default: every ``requires_grad`` parameter) are
            differentiated. Output keys drop wrapper prefixes (``module.``).
        batches: this rank's share of the data (an iterable of batches, consumed once).
        objective: ``objective(model, batch)`` → the batch's training loss (``pi_tuning``) or per-sample
            log-likelihoods ``[B]`` (``empirical``/``model``).
        estimator: ``"pi_tuning"`` | ``"empirical"`` | ``"model"``.
        vectorized: per-sample estimators only: ``torch.func`` (True) or the per-sample loop (False).
        sample_fn: ``estimator="model"`` only: ``sample_fn(model, batch, generator)`` returns the batch
            with labels drawn from the model; run under ``no_grad`` in the same mode.
        mode: ``"eval"`` (default), ``"train"`` (π-Tuning's setting) or ``"keep"`` (caller's choice).
        batch_size: ``pi_tuning`` only: the nominal per-rank batch size of the divisor; default the
            largest batch seen on any rank.
        batch_size_fn: number of samples of a batch (default :func:`infer_batch_size`).
        chunk_size: passed to ``vmap`` to bound memory (per-sample gradients of ``chunk_size`` samples).
        generator: random generator handed to ``sample_fn``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "model" and sample_fn is None:
        raise ValueError("estimator='model' needs sample_fn(model, batch, generator) that draws labels from the model")
    params = select_parameters(model, param_names)
    low = [n for n, p in params.items() if p.dtype in (torch.float16, torch.bfloat16)]
    if low:
        warnings.warn(
            f"Fisher of low-precision parameters ({low[0]}, ...): gradients are squared and summed in fp32, but the "
            "forward/backward runs in the model's dtype; run the model in fp32 for π-Tuning-exact numbers"
        )
    per_sample = estimator != "pi_tuning"
    if per_sample and vectorized and mode != "eval":
        bn_training = [
            n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or mode == "train")
        ]
        if bn_training:
            raise ValueError(
                f"vectorised per-sample Fisher cannot use BatchNorm batch statistics ({bn_training[0]} would be in "
                "training mode): use mode='eval' or vectorized=False"
            )
    randomness = "different" if mode != "eval" else "error"

    names = list(params)
    device = next(iter(params.values())).device
    sums: List[Tensor] = [torch.zeros(p.shape, dtype=torch.float32, device=device) for p in params.values()]
    reached = [False] * len(names)
    n_batches = 0
    n_samples = 0
    max_bsz = 0
    with _mode(model, mode), _grad_only(model, names):
        for batch in batches:
            bsz = int(batch_size_fn(batch))
            if bsz <= 0:
                continue
            if estimator == "model":
                with torch.no_grad():
                    batch = sample_fn(model, batch, generator)
            if not per_sample:
                sq = _batch_sq_grads(model, params, objective, batch)
            elif vectorized:
                sq = _vmap_sq_grads(model, params, objective, batch, bsz, chunk_size, randomness)
            else:
                sq = _loop_sq_grads(model, params, objective, batch, bsz)
            for k, s in enumerate(sq):
                if s is not None:
                    sums[k] += s
                    reached[k] = True
            n_batches += 1
            n_samples += bsz
            max_bsz = max(max_bsz, bsz)

    on, world = _world()
    if on:
        counts = torch.tensor([n_batches, n_samples], dtype=torch.float64, device=device)
        dist.all_reduce(counts)
        n_batches, n_samples = int(counts[0].item()), int(counts[1].item())
        mx = torch.tensor([max_bsz], dtype=torch.float64, device=device)
        dist.all_reduce(mx, op=dist.ReduceOp.MAX)
        max_bsz = int(mx.item())
        for s in sums:
            dist.all_reduce(s)
        flags = torch.tensor([float(r) for r in reached], dtype=torch.float64, device=device)
        dist.all_reduce(flags)
        reached = [bool(f > 0) for f in flags.tolist()]
    if n_samples == 0:
        raise ValueError("Fisher estimation saw zero samples: the data iterator was empty on every rank")
    unreached = [n for n, r in zip(names, reached) if not r]
    if unreached:
        logger.warning("no gradient reached %d selected tensors (their Fisher is 0): %s", len(unreached), unreached[:5])

    if per_sample:
        divisor = float(n_samples)
        normalisation = "mean over samples (global sample count)"
    else:
        nominal = int(batch_size) if batch_size is not None else max_bsz
        divisor = float(n_batches * nominal)
        normalisation = (
            f"sum over batches of squared batch-loss gradients / (n_batches_all_ranks={n_batches} * batch_size={nominal}) "
            "= pi-Tuning's n_batches_per_rank * batch_size * world_size"
        )
    fisher = {stable_name(n): s / divisor for n, s in zip(names, sums)}
    return FisherEstimate(fisher, estimator, n_samples, n_batches, divisor, normalisation, mode, world)


# ------------------------------------------------------------------------- fairseq-sample objectives


def criterion_objective(criterion: Callable[..., Any]) -> Objective:
    """π-Tuning's objective from a fairseq criterion: the summed training loss ``criterion(model, sample)[0]``."""

    def objective(model: nn.Module, sample: Any) -> Tensor:
        return criterion(model, sample)[0]

    return objective


def _target_log_probs(model: nn.Module, sample: Mapping[str, Any], allowed: Optional[Tensor]) -> Tensor:
    logits = model(**sample["net_input"])[0]  # [B, T, V]
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    return torch.log_softmax(logits.float(), dim=-1)


def seq2seq_log_likelihood(padding_idx: int, allowed: Optional[Tensor] = None) -> Objective:
    """Per-sample ``log p(target | input)`` [B] of a fairseq seq2seq sample, pads excluded.

    Written without data-dependent shapes (masking, not boolean indexing), so it runs under
    ``vmap``. ``allowed`` (bool [V]) restricts the output vocabulary as a constrained decoder does
    (e.g. OFA's ``--constraint-range`` for the box bins).
    """

    def objective(model: nn.Module, sample: Any) -> Tensor:
        target = sample["target"]
        lp = _target_log_probs(model, sample, allowed).gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [B, T]
        return torch.where(target.ne(padding_idx), lp, torch.zeros_like(lp)).sum(-1)

    return objective


def teacher_forced_sampler(padding_idx: int, allowed: Optional[Tensor] = None) -> SampleFn:
    """``sample_fn`` for ``estimator="model"``: each target token drawn from p(· | x, gold prefix).

    This is the teacher-forced approximation of y ~ p(·|x): the decoder input stays the gold
    prefix, so one forward pass draws every position. Pads stay pads.
    """

    def sample_fn(model: nn.Module, sample: Any, generator: Optional[torch.Generator]) -> Any:
        probs = _target_log_probs(model, sample, allowed).exp()  # [B, T, V]
        drawn = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
        target = sample["target"]
        return {**sample, "target": torch.where(target.ne(padding_idx), drawn.to(target.dtype), target)}

    return sample_fn


# ------------------------------------------------------------------------------- layout signature


def piece_layout(tensors: Mapping[str, Tensor]) -> Dict[str, List[int]]:
    """Name → shape: what must agree between expert / embedding files that are compared or mixed."""
    return {k: list(v.shape) for k, v in sorted(tensors.items())}


def layout_signature(tensors: Mapping[str, Tensor]) -> str:
    """Short hash of the sorted (name, shape) list."""
    text = ";".join(f"{k}:{'x'.join(map(str, s))}" for k, s in piece_layout(tensors).items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def layout_difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor], limit: int = 3) -> Optional[str]:
    """None when names and shapes agree, else a short description of the first differences."""
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    shapes = [k for k in sorted(set(a) & set(b)) if tuple(a[k].shape) != tuple(b[k].shape)]
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} tensors only in the first (e.g. {only_a[:limit]})")
    if only_b:
        parts.append(f"{len(only_b)} tensors only in the second (e.g. {only_b[:limit]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shapes differ (e.g. {k}: {list(a[k].shape)} vs {list(b[k].shape)})")
    return "; ".join(parts) or None


def fisher_mass(fisher: Mapping[str, Tensor], prefix: str = "") -> float:
    """Sum of a task embedding's entries (of the tensors whose names start with ``prefix``), in float64:
    how much gradient the task still puts on the expert's parameters."""
    return sum(float(t.double().sum()) for name, t in fisher.items() if name.startswith(prefix))


# ------------------------------------------------------------------------------------------ file I/O


def save_task_embedding(path: str | Path, fisher: Mapping[str, Tensor], meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a task embedding: safetensors (fp32 tensors) with the JSON metadata in its header.

    ``meta`` should name the task (``task``), the expert piece file (``expert``), the estimator, the
    sample count and the normalisation — :meth:`FisherEstimate.meta` gives the last ones. The piece
    layout signature is added here. A ``.json`` copy of the metadata is written beside the file for
    people; readers use the header only.
    """
    from safetensors.torch import save_file

    if not fisher:
        raise ValueError(f"refusing to write an empty task embedding to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = dict(meta or {})
    full.setdefault("task", path.stem)
    full["layout_signature"] = layout_signature(fisher)
    full["n_tensors"] = len(fisher)
    full["n_elements"] = int(sum(t.numel() for t in fisher.values()))
    try:
        text = json.dumps(full, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"task-embedding metadata for {path} must be JSON-serialisable: {e}") from None
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in fisher.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": TASK_EMBEDDING_FORMAT, "format_version": TASK_EMBEDDING_VERSION, "meta": text})
    atomic_write_text(path.with_suffix(".json"), json.dumps(full, indent=2, sort_keys=True) + "\n")
    return path


def load_task_embedding(path: str | Path) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """Read a file written by :func:`save_task_embedding` → (tensors, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task embedding not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a safetensors file: {e}") from None
    if header.get("format") != TASK_EMBEDDING_FORMAT:
        raise ValueError(f"{path} is not an ofa_ext task embedding (header format={header.get('format')!r})")
    if header.get("format_version") != TASK_EMBEDDING_VERSION:
        warnings.warn(f"{path}: task-embedding format version {header.get('format_version')}, this reader knows {TASK_EMBEDDING_VERSION}")
    meta = json.loads(header.get("meta", "{}"))
    return tensors, meta


__all__ = [
    "ESTIMATORS",
    "criterion_objective",
    "seq2seq_log_likelihood",
    "teacher_forced_sampler",
    "FisherEstimate",
    "fisher_diagonal",
    "fisher_mass",
    "infer_batch_size",
    "layout_difference",
    "layout_signature",
    "load_task_embedding",
    "piece_layout",
    "save_task_embedding",
    "select_parameters",
    "stable_name",
]
