"""Kwon et al.'s config (plain data): the four steps' settings; the budget is the target's (``cost_seq``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.spec.fields import option
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.method import JobDefaults

__all__ = ["KwonConfig", "STAGES", "FIT_ROWS", "TUNE_TEACHERS"]

STAGES = ("search", "rearrange", "tune")
FIT_ROWS = ("reaching", "all")
TUNE_TEACHERS = ("unpruned", "intermediate")


@dataclass
class KwonConfig(MaskSpec):
    """Kwon settings; the target is a ``flops:`` or ``density:`` budget (FLOPs at ``cost_seq`` tokens, or
    the sample data's mean length when unset: the paper's choice)."""

    method: ClassVar[str] = "kwon"
    handler: ClassVar[str] = "leap_fx.methods.kwon.handler:Kwon"
    job: ClassVar[JobDefaults] = JobDefaults(granularity="structured")

    granularity: str = option("structured", "kwon prunes whole heads and neurons: structured")
    fisher_batch: int = option(1, "examples per mask gradient (1: per-example Fisher, the paper; 32: the "
                                  "reference code)")
    tune_examples: int = option(512, "sample examples used by mask tuning (least squares); the Fisher uses all")
    stop_after: str = option("tune", "search | rearrange | tune (all steps, default)")
    scale_bound: float = option(10.0, "tuned scales outside [-bound, bound] are rejected (paper: 10)")
    damping: float = option(1e-6, "least-squares damping, relative to the mean diagonal of A^T A")
    fit_rows: str = option("reaching", "reaching: mask tuning fits only the token rows that reach the output "
                                       "(e.g. [CLS] in a classifier's last layer, as the reference code) | all")
    experts: float = option(1.0, "mixture of experts: fraction of each layer's routed experts kept (never fewer "
                                 "than its top-k; 1: none removed); the rest chosen by measured loss")
    expert_examples: int = option(32, "sample examples scoring whole experts (one forward per expert)")
    tune_teacher: str = option("unpruned", "what mask tuning reconstructs: unpruned (the paper) | intermediate "
                                           "(the reference code: the searched mask at the square root of the "
                                           "target)")

    def __post_init__(self):
        super().__post_init__()
        if not self.structured:
            raise ValueError(f"kwon prunes whole heads and neurons: granularity must be 'structured', "
                             f"got {self.granularity!r}")
        if self.goal.unit == "latency":
            raise ValueError(f"kwon searches a FLOPs or density budget, not {self.goal}: use e.g. 'flops:0.5'")
        for name, allowed in (("stop_after", STAGES), ("fit_rows", FIT_ROWS), ("tune_teacher", TUNE_TEACHERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: use one of {list(allowed)}")
        if isinstance(self.experts, bool) or not 0 < float(self.experts) <= 1:
            raise ValueError(f"experts={self.experts} must be a fraction in (0, 1]")
        for name in ("fisher_batch", "tune_examples", "expert_examples"):
            if isinstance(getattr(self, name), bool) or int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.scale_bound > 0 or not self.damping >= 0:
            raise ValueError(f"scale_bound={self.scale_bound} must be > 0 and damping={self.damping} >= 0")
