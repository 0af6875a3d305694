"""Gradual magnitude pruning's config (plain data): the cubic schedule and how often |W| is re-scored."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.methods.scheduled.config import ScheduleConfig
from leap_fx.spec.fields import option

__all__ = ["MagnitudeConfig"]


@dataclass
class MagnitudeConfig(ScheduleConfig):
    method: ClassVar[str] = "magnitude"
    handler: ClassVar[str] = "leap_fx.methods.magnitude.handler:Magnitude"

    prune_every: int = option(1, "rescore by |W| every N steps")

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.prune_every, bool) or self.prune_every < 1:
            raise ValueError(f"prune_every={self.prune_every} must be >= 1")
