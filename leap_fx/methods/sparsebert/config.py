"""SparseBERT's config (plain data): the schedule's (``MagnitudeConfig``), LEAP's for ``scorer="leap"``
(``LeapConfig``) and the distillation weights; the job prunes the *pretrained* model at lr 4e-4
(``handler.py`` says why)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.methods.leap.config import LeapConfig
from leap_fx.methods.magnitude.config import MagnitudeConfig
from leap_fx.spec.fields import option
from leap_fx.spec.method import JobDefaults

__all__ = ["SparseBertConfig", "SCORERS", "LR"]

SCORERS = ("magnitude", "leap")
LR = 4e-4  # the job's weight learning rate for this method (handler docstring: the short-run sweep)


@dataclass
class SparseBertConfig(MagnitudeConfig, LeapConfig):
    """SparseBERT settings: the schedule's, LEAP's for ``scorer="leap"``, and the distillation weights."""

    method: ClassVar[str] = "sparsebert"
    handler: ClassVar[str] = "leap_fx.methods.sparsebert.handler:SparseBert"
    job: ClassVar[JobDefaults] = JobDefaults(granularity="unstructured", lr=LR, student_init="pretrained",
                                             options=dict(LeapConfig.job.options))

    prune_every: int = option(10, "update the masks every N steps (cubic schedule held in between; default 10)")
    scorer: str = option("magnitude", "magnitude: per-matrix |W| on the cubic schedule (paper); leap: LEAP's "
                                      "learnable thresholds")
    hidden_weight: float = option(1.0, "w_h: weight of the hidden-state MSE (embeddings + every layer)")
    attention_weight: float = option(0.1, "w_a: weight of the attention-score MSE (every layer)")
    kd_temperature: float = option(1.0, "temperature of the soft cross-entropy on the logits (paper: 1)")

    def __post_init__(self):
        super().__post_init__()
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer={self.scorer!r}: use one of {SCORERS}")
        if not self.kd_temperature > 0 or self.hidden_weight < 0 or self.attention_weight < 0:
            raise ValueError(f"need kd_temperature > 0 (got {self.kd_temperature}) and hidden_weight, "
                             f"attention_weight >= 0 (got {self.hidden_weight}, {self.attention_weight})")
