"""Gradual magnitude pruning (Zhu & Gupta 2017) with the cubic schedule (Eq. 1).

Scores are the weight magnitudes summed over each granule (over every tied member), recomputed every
``prune_every`` steps under the current mask, so pruned granules stay pruned (as Zhu & Gupta's
masks only shrink). Scores are not trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from leap_fx.masks.prepare import magnitudes, owners
from leap_fx.masks.topk import ScheduledTopK
from leap_fx.methods.registry import register
from leap_fx.methods.scheduled import ScheduleConfig, Scheduled


@dataclass
class MagnitudeConfig(ScheduleConfig):
    method: ClassVar[str] = "magnitude"
    HELP: ClassVar[dict] = {**ScheduleConfig.HELP, "prune_every": "rescore by |W| every N steps"}
    prune_every: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.prune_every < 1:
            raise ValueError(f"prune_every={self.prune_every} must be >= 1")

    def make_owner(self, shape, key, device=None) -> ScheduledTopK:
        return ScheduledTopK(shape, learn_scores=False, key=key, device=device)


@torch.no_grad()
def rescore(model) -> None:
    """S = sum |W| per granule, times the current hard mask (pruned granules score 0)."""
    own = owners(model)
    for key, m in magnitudes(model).items():
        own[key].set_scores(m.to(own[key].scores.dtype) * own[key].hard_mask())


@register(MagnitudeConfig)
class Magnitude(Scheduled):
    def on_step(self, model, step):
        if step % self.config.prune_every == 0:
            rescore(model)  # ranks by |W| under the previous mask, then the new K applies
        return super().on_step(model, step)

    def finalize(self, model):
        rescore(model)
        return super().finalize(model)
