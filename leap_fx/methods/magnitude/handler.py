"""Gradual magnitude pruning (Zhu & Gupta 2017) with the cubic schedule (Eq. 1).

Scores are the weight magnitudes summed over each granule (over every tied member), recomputed every
``prune_every`` steps under the current mask, so pruned granules stay pruned (as Zhu & Gupta's
masks only shrink). Scores are not trained.
"""
from __future__ import annotations

import torch

from leap_fx.masks.lifecycle import magnitudes, owners
from leap_fx.masks.topk import ScheduledTopK
from leap_fx.methods.magnitude.config import MagnitudeConfig
from leap_fx.methods.registry import register
from leap_fx.methods.scheduled.handler import Scheduled

__all__ = ["Magnitude", "rescore"]


@torch.no_grad()
def rescore(model) -> None:
    """S = sum |W| per granule, times the current hard mask (pruned granules score 0)."""
    own = owners(model)
    for key, m in magnitudes(model).items():
        own[key].set_scores(m.to(own[key].scores.dtype) * own[key].hard_mask())


@register(MagnitudeConfig)
class Magnitude(Scheduled):
    def make_owner(self, shape, key, device=None) -> ScheduledTopK:
        return ScheduledTopK(shape, learn_scores=False, key=key, device=device)

    def on_step(self, model, step):
        if step % self.config.prune_every == 0:
            rescore(model)  # ranks by |W| under the previous mask, then the new K applies
        return super().on_step(model, step)

    def finalize(self, model):
        rescore(model)
        return super().finalize(model)
