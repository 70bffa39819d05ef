"""PaRe's gate and patch replacement (`specs/pare.md` §3-4): build one intermediate-modality sample.

A single :class:`TokenGate` scores every token of a target sample ``x_t`` [B, N, d] and of a source
sample ``x_s`` [B, Ns, d]; then k target tokens are overwritten by k source tokens:

* **relaxed** (early epochs): Gumbel-perturbed straight-through top-k masks (``pare_topk``). The
  source side selects k tokens; both token sets are multiplied by their mask values (so the gate
  gets a gradient) and the selected source tokens are written, in increasing index order, into the
  overwritten target positions, also in increasing index order (no spatial correspondence).
* **deterministic** (later epochs): plain top-k of the gate scores, no noise, no gate gradient;
  the i-th best source token goes to the i-th position in the order the targets are chosen.

Which target tokens are overwritten is ``replace``: ``low`` = the lowest-scored ones (the released
relaxed phase, which selects the N - k tokens to *keep*), ``high`` = the highest-scored ones (the
released deterministic phase). :data:`RELEASED_REPLACE` gives each phase's released default.

Each replacement has a per-step reference (``*_loop``: per sample, per token, as one would write
it from the description) and the vectorised path used in training (one gather + scatter).
"""

from typing import Optional

import torch
from torch import Tensor, nn

from .pare_topk import KHotFn, gumbel_noise, relaxed_khot, relaxed_khot_loop, relaxed_topk_mask

PHASES = ("relaxed", "deterministic")
REPLACE_CHOICES = ("low", "high")
RELEASED_REPLACE = {"relaxed": "low", "deterministic": "high"}


class TokenGate(nn.Module):
    """``sigmoid(Linear(d, 1))`` per token: one gate scores source and target tokens alike."""

    def __init__(self, width: int, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.proj = nn.Linear(width, 1, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T, d] -> scores in (0, 1), [B, T]."""
        return torch.sigmoid(self.proj(tokens)).squeeze(-1)


def _check_pair(x_t: Tensor, x_s: Tensor, g_t: Tensor, g_s: Tensor, k: int, replace: str) -> None:
    if replace not in REPLACE_CHOICES:
        raise ValueError(f"--pare-replace must be one of {', '.join(REPLACE_CHOICES)}, got {replace!r}")
    if x_t.dim() != 3 or x_s.dim() != 3 or x_t.shape[0] != x_s.shape[0] or x_t.shape[2] != x_s.shape[2]:
        raise ValueError(
            f"patch replacement needs target [B, N, d] and source [B, Ns, d] tokens, got "
            f"{tuple(x_t.shape)} and {tuple(x_s.shape)}"
        )
    if g_t.shape != x_t.shape[:2] or g_s.shape != x_s.shape[:2]:
        raise ValueError(f"gate scores {tuple(g_t.shape)}/{tuple(g_s.shape)} do not match the tokens")
    if not 1 <= k <= min(x_t.shape[1], x_s.shape[1]):
        raise ValueError(
            f"patch replacement needs 1 <= k <= min(target tokens {x_t.shape[1]}, source tokens "
            f"{x_s.shape[1]}), got k={k}"
        )


# ---------------------------------------------------------------- deterministic phase


def _det_indices(g_t: Tensor, g_s: Tensor, k: int, replace: str) -> tuple[Tensor, Tensor]:
    """(target positions [B, k] in the order they are chosen, source indices [B, k] best first)."""
    src = g_s.detach().topk(k, dim=-1).indices
    tgt = g_t.detach().topk(k, dim=-1, largest=(replace == "high")).indices
    return tgt, src


def replace_deterministic(x_t: Tensor, x_s: Tensor, g_t: Tensor, g_s: Tensor, k: int, replace: str = "high") -> Tensor:
    """Vectorised deterministic top-k replacement; returns the mixed tokens [B, N, d]."""
    _check_pair(x_t, x_s, g_t, g_s, k, replace)
    tgt, src = _det_indices(g_t, g_s, k, replace)
    d = x_t.shape[-1]
    moved = x_s.gather(1, src.unsqueeze(-1).expand(-1, -1, d))  # [B, k, d]
    return x_t.scatter(1, tgt.unsqueeze(-1).expand(-1, -1, d), moved)


def replace_deterministic_loop(
    x_t: Tensor, x_s: Tensor, g_t: Tensor, g_s: Tensor, k: int, replace: str = "high"
) -> Tensor:
    """Reference: rank the scores per sample and copy one token at a time."""
    _check_pair(x_t, x_s, g_t, g_s, k, replace)
    rows = []
    for b in range(x_t.shape[0]):
        order_s = torch.argsort(g_s[b].detach(), descending=True)
        order_t = torch.argsort(g_t[b].detach(), descending=(replace == "high"))
        row = list(x_t[b].unbind(0))
        for j in range(k):
            row[int(order_t[j])] = x_s[b, int(order_s[j])]
        rows.append(torch.stack(row))
    return torch.stack(rows)


# ---------------------------------------------------------------- relaxed phase


def relaxed_masks(
    g_t: Tensor, g_s: Tensor, noise_t: Tensor, noise_s: Tensor, k: int, tau: float, replace: str,
    khot_fn: KHotFn = relaxed_khot,
) -> tuple[Tensor, Tensor]:
    """Straight-through (keep mask of the target [B, N], selection mask of the source [B, Ns]).

    ``low`` (released): the target keeps its relaxed top-(N - k), so the k lowest-ranked tokens
    (after Gumbel noise) are overwritten. ``high``: the target's relaxed top-k is overwritten,
    keep = 1 - that mask (the same straight-through gradient, negated; k steps instead of N - k).
    """
    m_s = relaxed_topk_mask(g_s, noise_s, k, tau, khot_fn=khot_fn)
    if replace == "low":
        m_t = relaxed_topk_mask(g_t, noise_t, g_t.shape[-1] - k, tau, khot_fn=khot_fn)
    else:
        m_t = 1.0 - relaxed_topk_mask(g_t, noise_t, k, tau, khot_fn=khot_fn)
    return m_t, m_s


def _selected_in_order(mask: Tensor, want: bool, k: int) -> Tensor:
    """Indices [B, k], increasing, of the positions where the hard mask is ``want``."""
    hit = (mask.detach() > 0.5) == want
    # a stable sort keeps increasing index order among the hits, which sort first
    return torch.sort((~hit).to(torch.int8), dim=-1, stable=True).indices[:, :k]


def replace_relaxed(
    x_t: Tensor, x_s: Tensor, g_t: Tensor, g_s: Tensor, noise_t: Tensor, noise_s: Tensor, k: int,
    tau: float = 0.9, replace: str = "low",
) -> Tensor:
    """Vectorised relaxed replacement; returns the mixed tokens [B, N, d] (gate gets gradients)."""
    _check_pair(x_t, x_s, g_t, g_s, k, replace)
    m_t, m_s = relaxed_masks(g_t, g_s, noise_t, noise_s, k, tau, replace)
    d = x_t.shape[-1]
    moved = (x_s * m_s.unsqueeze(-1)).gather(1, _selected_in_order(m_s, True, k).unsqueeze(-1).expand(-1, -1, d))
    slots = _selected_in_order(m_t, False, k).unsqueeze(-1).expand(-1, -1, d)
    return (x_t * m_t.unsqueeze(-1)).scatter(1, slots, moved)


def replace_relaxed_loop(
    x_t: Tensor, x_s: Tensor, g_t: Tensor, g_s: Tensor, noise_t: Tensor, noise_s: Tensor, k: int,
    tau: float = 0.9, replace: str = "low",
) -> Tensor:
    """Reference: the released step loop for the masks and per-sample boolean indexing for the write."""
    _check_pair(x_t, x_s, g_t, g_s, k, replace)
    m_t, m_s = relaxed_masks(g_t, g_s, noise_t, noise_s, k, tau, replace, khot_fn=relaxed_khot_loop)
    kept = x_t * m_t.unsqueeze(-1)
    taken = x_s * m_s.unsqueeze(-1)
    rows = []
    for b in range(x_t.shape[0]):
        row = kept[b].clone()
        row[m_t[b].detach() < 0.5] = taken[b][m_s[b].detach() > 0.5]
        rows.append(row)
    return torch.stack(rows)


def draw_noise(g_t: Tensor, g_s: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Gumbel noise for both score sets, from one generator (one per rank in training)."""
    return gumbel_noise(g_t.detach(), generator), gumbel_noise(g_s.detach(), generator)
