"""Movement pruning (Sanh et al. 2020): learned scores S (straight-through, dL/dS = dL/dW' W), Top-K
with K from the cubic schedule (Eq. 1); the baseline LEAP is compared with, in the same loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.masks.topk import ScheduledTopK
from leap_fx.methods.leap import SCORE_INITS, warm_start_scores
from leap_fx.methods.registry import register
from leap_fx.methods.scheduled import ScheduleConfig, Scheduled


@dataclass
class MovementConfig(ScheduleConfig):
    method: ClassVar[str] = "movement"
    JOB_DEFAULTS: ClassVar[dict] = {"score_init": "magnitude"}
    HELP: ClassVar[dict] = {**ScheduleConfig.HELP, "mask_lr": "learning rate of the scores S (default 1e-2)",
                            "score_init": "S at the start: magnitude prior (job default) or zero (paper)"}
    mask_lr: Optional[float] = None
    score_init: str = "zero"

    def __post_init__(self):
        super().__post_init__()
        if self.score_init not in SCORE_INITS:
            raise ValueError(f"score_init={self.score_init!r}: use one of {SCORE_INITS}")

    def make_owner(self, shape, key, device=None) -> ScheduledTopK:
        return ScheduledTopK(shape, learn_scores=True, key=key, device=device)


@register(MovementConfig)
class Movement(Scheduled):
    def prepare(self, model, plan):
        super().prepare(model, plan)
        if self.config.score_init == "magnitude":
            warm_start_scores(model, self.mask_lr())
