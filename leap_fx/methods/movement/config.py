"""Movement pruning's config (plain data): the cubic schedule, the scores' learning rate and start."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.methods.leap.config import SCORE_INITS
from leap_fx.methods.scheduled.config import ScheduleConfig
from leap_fx.spec.fields import option
from leap_fx.spec.method import JobDefaults

__all__ = ["MovementConfig"]


@dataclass
class MovementConfig(ScheduleConfig):
    method: ClassVar[str] = "movement"
    handler: ClassVar[str] = "leap_fx.methods.movement.handler:Movement"
    job: ClassVar[JobDefaults] = JobDefaults(options={"score_init": "magnitude"})

    mask_lr: Optional[float] = option(None, "learning rate of the scores S (default 1e-2)")
    score_init: str = option("zero", "S at the start: magnitude prior (job default) or zero (paper)")

    def __post_init__(self):
        super().__post_init__()
        if self.score_init not in SCORE_INITS:
            raise ValueError(f"score_init={self.score_init!r}: use one of {SCORE_INITS}")
        if self.mask_lr is not None and not self.mask_lr > 0:
            raise ValueError(f"mask_lr={self.mask_lr} must be > 0 (or unset: 1e-2)")
