"""`ofa_polynomial_decay`: fairseq's polynomial decay with OFA's `--warmup-ratio`.

OFA's run scripts give the warm-up as a fraction of the run (0.06) instead of a number of updates.
Here the warm-up is `int(warmup_ratio * total_num_update)` updates; `--total-num-update` defaults
to `--max-update` (the run scripts compute it from the data size and epochs).
"""

from dataclasses import dataclass, field

from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.polynomial_decay_schedule import (
    PolynomialDecayLRSchedule,
    PolynomialDecayLRScheduleConfig,
)
from omegaconf import open_dict


@dataclass
class WarmupRatioPolynomialDecayConfig(PolynomialDecayLRScheduleConfig):
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "warm up over this fraction of --total-num-update (overrides --warmup-updates)"}
    )


def warmup_updates_from_ratio(ratio: float, total_num_update: float) -> int:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"--warmup-ratio must be in [0, 1), got {ratio}")
    if total_num_update <= 0:
        raise ValueError("ofa_polynomial_decay needs --total-num-update or --max-update > 0 to place the warm-up")
    return int(ratio * total_num_update)


@register_lr_scheduler("ofa_polynomial_decay", dataclass=WarmupRatioPolynomialDecayConfig)
class WarmupRatioPolynomialDecay(PolynomialDecayLRSchedule):
    def __init__(self, cfg: WarmupRatioPolynomialDecayConfig, optimizer):
        if cfg.warmup_ratio > 0:
            with open_dict(cfg):
                cfg.warmup_updates = warmup_updates_from_ratio(cfg.warmup_ratio, cfg.total_num_update)
        super().__init__(cfg, optimizer)
