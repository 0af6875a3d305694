"""Movement pruning (Sanh et al. 2020): learned scores S (straight-through, dL/dS = dL/dW' W), Top-K
with K from the cubic schedule (Eq. 1); the baseline LEAP is compared with, in the same loop."""
from __future__ import annotations

from leap_fx.masks.topk import ScheduledTopK
from leap_fx.methods.base import PAPER_MASK_LR
from leap_fx.methods.leap.handler import warm_start_scores
from leap_fx.methods.movement.config import MovementConfig
from leap_fx.methods.registry import register
from leap_fx.methods.scheduled.handler import Scheduled

__all__ = ["Movement"]


@register(MovementConfig)
class Movement(Scheduled):
    def make_owner(self, shape, key, device=None) -> ScheduledTopK:
        return ScheduledTopK(shape, learn_scores=True, key=key, device=device)

    def mask_lr(self) -> float:
        return PAPER_MASK_LR if self.config.mask_lr is None else float(self.config.mask_lr)

    def prepare(self, model, plan):
        super().prepare(model, plan)
        if self.config.score_init == "magnitude":
            warm_start_scores(model, self.mask_lr())
