"""The dense fine-tune's config (the teacher): no masks, nothing to prune."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.spec.method import MethodConfig

__all__ = ["DenseConfig"]


@dataclass
class DenseConfig(MethodConfig):
    method: ClassVar[str] = "dense"
    handler: ClassVar[str] = "leap_fx.methods.dense.handler:Dense"
    prunes: ClassVar[bool] = False
