"""`ofa_polynomial_decay`: fairseq's polynomial decay with OFA's `--warmup-ratio`.

OFA's run scripts give the warm-up as a fraction of the run (0.06) instead of a number of updates.
Here the warm-up is `int(warmup_ratio * total_num_update)` updates. `--total-num-update` must be
given (fairseq's config cannot default it to `--max-update` from the command line); the run scripts
compute it from the data size and the number of epochs.
"""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.polynomial_decay_schedule import (
    PolynomialDecayLRSchedule,
    PolynomialDecayLRScheduleConfig,
)
from omegaconf import open_dict


@dataclass
class WarmupRatioPolynomialDecayConfig(PolynomialDecayLRScheduleConfig):
    total_num_update: Optional[float] = field(
        default=None, metadata={"help": "total number of updates over which to decay the learning rate"}
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "warm up over this fraction of --total-num-update (overrides --warmup-updates)"}
    )


def warmup_updates_from_ratio(ratio: float, total_num_update: float) -> int:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"--warmup-ratio must be in [0, 1), got {ratio}")
    if total_num_update is None or total_num_update <= 0:
        raise ValueError("--lr-scheduler ofa_polynomial_decay needs --total-num-update > 0 (usually = --max-update)")
    return int(ratio * total_num_update)


@register_lr_scheduler("ofa_polynomial_decay", dataclass=WarmupRatioPolynomialDecayConfig)
class WarmupRatioPolynomialDecay(PolynomialDecayLRSchedule):
    def __init__(self, cfg: WarmupRatioPolynomialDecayConfig, optimizer):
        warmup = warmup_updates_from_ratio(cfg.warmup_ratio, cfg.total_num_update)
        if cfg.warmup_ratio > 0:
            with open_dict(cfg):
                cfg.warmup_updates = warmup
        super().__init__(cfg, optimizer)
