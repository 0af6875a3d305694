"""Dense fine-tuning (the teacher): plain weights, no masks, no penalty; CE unless a teacher is given."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.methods.base import TrainedMethod
from leap_fx.methods.registry import register
from passes.io import JsonDataclass


@dataclass
class DenseConfig(JsonDataclass):
    method: ClassVar[str] = "dense"
    HELP: ClassVar[dict] = {}


@register(DenseConfig)
class Dense(TrainedMethod):
    uses_masks = False
