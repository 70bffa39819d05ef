"""PaRe's relaxed Gumbel top-k (`specs/pare.md` §4): a k-hot selection the gate can learn through.

The released ``SubsetOperator`` perturbs the scores with Gumbel(0, 1) noise and then repeats k
times: damp the mass already taken (``s += log(max(1 - p, tiny))``), ``p = softmax(s / tau)``,
``khot += p``. With ``hard`` the output is the straight-through mask
``onehot_topk(khot) - stopgrad(khot) + khot``: exactly k ones forward, the relaxed gradient backward.

Two implementations of ``khot`` live here, tested to agree on the same noise (values bit for bit,
gradients to rounding):

* :func:`relaxed_khot_loop` -- the reference: the released loop, autograd taping every step.
* :func:`relaxed_khot` -- the fast path: one ``autograd.Function`` whose forward runs the same
  arithmetic without a tape (keeping only the k softmax outputs) and whose backward is the
  hand-derived reverse recurrence (below), a few fused ops per step.

Why the fast path still steps through k: every softmax is taken over scores damped by all earlier
softmaxes, a nonlinear recurrence over the whole row, so step i cannot be computed before step
i - 1 (there is no closed form or associative scan for it). What *can* go is the autograd tape of
~8 nodes per step and its buffers; ``benchmarks/bench_pare_topk.py`` measures what that buys.

Backward (per row; ``g = dL/dkhot``, ``a_i = dL/dp_i``, ``b_i = dL/ds_i``, ``b_{k+1} = 0``)::

    a_i = g - b_{i+1} * [1 - p_i > tiny] / (1 - p_i)        (i < k;  a_k = g)
    b_i = b_{i+1} + p_i * (a_i - <a_i, p_i>) / tau
    dL/dscores = b_1
"""

from typing import Callable, Optional

import torch
from torch import Tensor

# The released code clamps with numpy's float32 ``tiny``; we keep that constant for every dtype.
TINY = float(torch.finfo(torch.float32).tiny)

KHotFn = Callable[[Tensor, int, float], Tensor]


def gumbel_noise(like: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Gumbel(0, 1) noise shaped like ``like``: ``-log(-log(u))``, u uniform away from 0 and 1."""
    eps = torch.finfo(like.dtype).eps
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log(-torch.log(u.clamp_(eps, 1.0 - eps)))


def _check_k(scores: Tensor, k: int) -> None:
    n = scores.shape[-1]
    if not 0 <= k <= n:
        raise ValueError(f"relaxed top-k needs 0 <= k <= {n} (tokens per row), got k={k}")


def relaxed_khot_loop(scores: Tensor, k: int, tau: float) -> Tensor:
    """Reference relaxed k-hot of already-perturbed ``scores`` [..., N]: the released loop."""
    _check_k(scores, k)
    khot = torch.zeros_like(scores)
    p = torch.zeros_like(scores)
    floor = torch.tensor([TINY], dtype=scores.dtype, device=scores.device)
    for _ in range(k):
        scores = scores + torch.log(torch.max(1.0 - p, floor))
        p = torch.softmax(scores / tau, dim=-1)
        khot = khot + p
    return khot


class _RelaxedKHot(torch.autograd.Function):
    """khot without an autograd tape; backward is the reverse recurrence of the module docstring."""

    @staticmethod
    def forward(ctx, scores: Tensor, k: int, tau: float) -> Tensor:  # type: ignore[override]
        probs: list[Tensor] = []
        peaks: list[Tensor] = []  # max of each softmax: tells the backward where the clamp was hit
        khot = torch.zeros_like(scores)
        p = None
        for _ in range(k):
            if p is not None:  # the released first step adds log(max(1 - 0, tiny)) = 0
                scores = scores + torch.rsub(p, 1.0).clamp_min_(TINY).log_()
            p = torch.softmax(scores / tau, dim=-1)
            probs.append(p)
            peaks.append(p.amax())
            khot.add_(p)
        ctx.save_for_backward(*probs)
        ctx.peaks, ctx.tau = peaks, tau
        return khot

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        probs, tau = ctx.saved_tensors, ctx.tau
        # 1 - p <= tiny only where p == 1 (1 - p is a multiple of the float spacing below 1); one sync
        clamped = (torch.stack(ctx.peaks) >= 1.0).tolist()
        b = torch.zeros_like(grad)
        a = grad.clone()
        for i in range(len(probs) - 1, -1, -1):
            p = probs[i]
            if i < len(probs) - 1:
                q = torch.rsub(p, 1.0)
                if clamped[i]:  # d log(max(q, tiny)) / dq = [q > tiny] / q
                    a = torch.addcmul(grad, b, q.reciprocal().masked_fill_(q <= TINY, 0.0), value=-1.0)
                else:
                    a = torch.addcdiv(grad, b, q, value=-1.0)
            a.sub_(torch.linalg.vecdot(a, p).unsqueeze(-1))
            b.addcmul_(p, a, value=1.0 / tau)
        return b, None, None


def relaxed_khot(scores: Tensor, k: int, tau: float) -> Tensor:
    """Fast relaxed k-hot of already-perturbed ``scores`` [..., N]; equals :func:`relaxed_khot_loop`.

    Memory: the k softmax outputs (k x numel(scores) values) are kept for the backward, about a
    third of what the taped loop keeps.
    """
    _check_k(scores, k)
    if k == 0:
        return torch.zeros_like(scores)
    return _RelaxedKHot.apply(scores, k, tau)


def straight_through_topk(khot: Tensor, k: int) -> Tensor:
    """Exact k-hot of the top-k of ``khot`` forward, gradient of ``khot`` backward (released rule)."""
    hard = torch.zeros_like(khot).scatter_(-1, khot.topk(k, dim=-1).indices, 1.0)
    return hard - khot.detach() + khot


def relaxed_topk_mask(
    scores: Tensor, noise: Tensor, k: int, tau: float, hard: bool = True, khot_fn: KHotFn = relaxed_khot
) -> Tensor:
    """The released ``SubsetOperator(k, tau, hard)`` on gate ``scores`` [B, N] with given ``noise``.

    Computed in float32 at least (fp16 cannot hold ``tiny``), returned in the scores' dtype.
    ``khot_fn`` picks the implementation (:func:`relaxed_khot` or :func:`relaxed_khot_loop`).
    """
    if noise.shape != scores.shape:
        raise ValueError(f"Gumbel noise of shape {tuple(noise.shape)} for scores of shape {tuple(scores.shape)}")
    work = torch.promote_types(scores.dtype, torch.float32)
    khot = khot_fn(scores.to(work) + noise.to(work), k, tau)
    out = straight_through_topk(khot, k) if hard else khot
    return out.to(scores.dtype)
