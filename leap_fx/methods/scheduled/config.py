"""The cubic schedule's config (plain data), shared by magnitude and movement pruning: t_0 and t_c of
LEAP's Eq. 1 as fractions of the run."""
from __future__ import annotations

from dataclasses import dataclass

from leap_fx.spec.fields import option
from leap_fx.spec.mask import MaskSpec

__all__ = ["ScheduleConfig"]


@dataclass
class ScheduleConfig(MaskSpec):
    """Target and granularity as every masking method, plus the schedule's t_0 and t_c (fractions)."""

    prune_warmup_ratio: float = option(0.1, "t_0 of the cubic schedule (Eq. 1), fraction of the run")
    prune_cooldown_ratio: float = option(0.2, "t_c of Eq. 1, fraction of the run")

    def __post_init__(self):
        super().__post_init__()
        w, c = self.prune_warmup_ratio, self.prune_cooldown_ratio
        if not (0 <= w and 0 <= c and w + c < 1.0):
            raise ValueError("need 0 <= prune_warmup_ratio, prune_cooldown_ratio and their sum < 1")
