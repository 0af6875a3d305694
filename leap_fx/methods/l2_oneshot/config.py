"""L2 one-shot's config (plain data): whole heads and neurons by weight norm, no options of its own."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.spec.fields import option
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.method import JobDefaults

__all__ = ["L2OneShotConfig"]


@dataclass
class L2OneShotConfig(MaskSpec):
    method: ClassVar[str] = "l2-oneshot"
    handler: ClassVar[str] = "leap_fx.methods.l2_oneshot.handler:L2OneShot"
    job: ClassVar[JobDefaults] = JobDefaults(granularity="structured")

    granularity: str = option("structured", "l2-oneshot prunes whole heads and neurons: structured")

    def __post_init__(self):
        super().__post_init__()
        if not self.structured:
            raise ValueError(f"l2-oneshot prunes whole heads and neurons: granularity must be 'structured', "
                             f"got {self.granularity!r}")
