"""PaRe's easy-to-hard curriculum (`specs/pare.md` §5): how many target tokens each epoch replaces.

Released rules, with ``ep`` the 0-based epoch index and k constant within an epoch:

* 2-D: ``k(ep) = floor(begin_num - end_num * ep / epochs)``
* 1-D: ``k(ep) = floor(seq_num * (1 - ep / epochs))``, i.e. the 2-D rule with begin = end = seq_num.

Both are evaluated here in exact integer arithmetic (the released float expression can land a hair
below an integer). Two released configs break on them: PSICOV has no ``begin_num`` (error at the
first mixed batch) and Satellite reaches k = 0 in its last epoch (crash in the deterministic
branch). So :meth:`PareSchedule.validate` checks every epoch at task setup, before training: k >= 1
(or ``clamp`` to 1 on request), k <= the target and source token counts.
"""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class PareSchedule:
    """``k(ep) = floor(begin - end * ep / epochs)`` for ``ep`` in ``[0, epochs)``; see module doc."""

    begin: int
    end: int
    epochs: int
    clamp: bool = False  # k = max(k, 1) instead of an error when the schedule reaches 0

    @classmethod
    def one_d(cls, seq_num: int, epochs: int, clamp: bool = False) -> "PareSchedule":
        """The released 1-D rule ``floor(seq_num * (1 - ep / epochs))``."""
        return cls(seq_num, seq_num, epochs, clamp)

    def k(self, ep: int) -> int:
        """Number of replaced tokens in 0-based epoch ``ep`` (an epoch past the schedule is an error)."""
        if not 0 <= ep < self.epochs:
            raise ValueError(f"PaRe schedule covers epochs 1..{self.epochs} (--pare-epochs), asked for epoch {ep + 1}")
        raw = (self.begin * self.epochs - self.end * ep) // self.epochs  # exact floor
        return max(raw, 1) if self.clamp else raw

    def lam(self, ep: int, n_target: int) -> float:
        """Mixing weight of the source label, λ = k / N (N = target tokens)."""
        return self.k(ep) / n_target

    def ks(self) -> list[int]:
        return [self.k(ep) for ep in range(self.epochs)]

    def validate(self, n_target: Optional[int] = None, n_source: Optional[int] = None, options: str = "") -> None:
        """One-line ValueError naming the options when some epoch's k is < 1 or exceeds a token count.

        ``options`` is how the user spelled the schedule (default: the begin/end flags). Without token
        counts only k >= 1 is checked (possible before the model exists).
        """
        if self.epochs < 1:
            raise ValueError(f"--pare-epochs must be >= 1, got {self.epochs}")
        ks = self.ks()
        spelled = options or f"--pare-begin-num {self.begin} --pare-end-num {self.end}"
        sched = f"{spelled} over {self.epochs} epochs"
        low = min(range(self.epochs), key=lambda ep: ks[ep])
        if ks[low] < 1:
            raise ValueError(
                f"{sched} gives k = {ks[low]} at epoch {low + 1}; k must stay >= 1 "
                f"(lower --pare-end-num, or pass --pare-clamp-k to use k = 1 there)"
            )
        if n_target is None or n_source is None:
            return
        high = max(range(self.epochs), key=lambda ep: ks[ep])
        limit = min(n_target, n_source)
        if ks[high] > limit:
            raise ValueError(
                f"{sched} gives k = {ks[high]} at epoch {high + 1}, more than the {n_target} target / "
                f"{n_source} source tokens per sample (k must be <= {limit})"
            )
