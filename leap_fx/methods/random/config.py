"""Random structured pruning's config (plain data): the baseline every importance criterion must beat."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.spec.fields import option
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.method import JobDefaults

__all__ = ["RandomConfig"]


@dataclass
class RandomConfig(MaskSpec):
    method: ClassVar[str] = "random"
    handler: ClassVar[str] = "leap_fx.methods.random.handler:RandomPruning"
    job: ClassVar[JobDefaults] = JobDefaults(granularity="structured")

    granularity: str = option("structured", "random prunes whole heads and neurons: structured")
    score_seed: int = option(0, "seed of the random scores (the training --seed is separate)")

    def __post_init__(self):
        super().__post_init__()
        if not self.structured:
            raise ValueError(f"random prunes whole heads and neurons: granularity must be 'structured', "
                             f"got {self.granularity!r}")
