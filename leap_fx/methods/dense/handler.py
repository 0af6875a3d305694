"""Dense fine-tuning (the teacher): plain weights, no masks, no penalty; CE unless a teacher is given."""
from __future__ import annotations

from leap_fx.methods.base import TrainedMethod
from leap_fx.methods.dense.config import DenseConfig
from leap_fx.methods.registry import register

__all__ = ["Dense"]


@register(DenseConfig)
class Dense(TrainedMethod):
    uses_masks = False
