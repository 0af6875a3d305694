"""``MethodConfig``: what every method's config declares, as plain data (no torch).

A method is a config (a dataclass subclassing ``MethodConfig``, or ``MaskSpec`` for methods that mask
weights) plus a handler (``leap_fx.methods``). The config declares, besides its own fields (each with
its help text as field metadata, ``fields.option``):

- ``method``: the method's name (``leap-fx prune --method NAME``); ``version`` of the config's schema;
- ``handler``: ``"module:Class"`` of the handler, imported only when the method is built;
- ``prunes``: False for a method that only trains (the dense teacher);
- ``job``: ``JobDefaults``, what the method asks of the job for settings the user leaves unset
  (granularity, target, learning rate, student initialisation, and values of its own fields for the
  job's short runs);
- ``strip_sublayers``: strip turns emptied attention / FFN sub-layers into constants (CoFi);
- ``residual`` (a property): the method prunes hidden dimensions, so the Plan needs the residual stream.

Everything the loop, the job, the CLI or a bench reads from a config is declared here with its default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from leap_fx.spec.fields import help_of
from passes.io import JsonDataclass

__all__ = ["JobDefaults", "MethodConfig", "DEFAULT_GRANULARITY", "DEFAULT_LR", "STUDENT_INITS"]

DEFAULT_GRANULARITY = "hybrid"
DEFAULT_LR = 3e-5          # LEAP App. A (weights)
STUDENT_INITS = ("teacher", "pretrained")


@dataclass(frozen=True)
class JobDefaults:
    """What a method asks of ``leap-fx prune`` for the settings the user leaves unset."""

    granularity: str = DEFAULT_GRANULARITY
    target: Optional[str] = None        # None: density:0.3 (spec.target.DEFAULT_TARGET)
    lr: float = DEFAULT_LR
    student_init: str = "teacher"       # the fine-tuned teacher's copy, or the pretrained weights
    options: dict = field(default_factory=dict)  # the method's own fields, set for the job's short runs

    def __post_init__(self):
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"student_init={self.student_init!r}: use one of {STUDENT_INITS}")


@dataclass
class MethodConfig(JsonDataclass):
    """Base of every method's config; see the module docstring for what it declares."""

    method: ClassVar[str] = ""
    version: ClassVar[int] = 1
    handler: ClassVar[str] = ""
    prunes: ClassVar[bool] = True
    job: ClassVar[JobDefaults] = JobDefaults()
    strip_sublayers: ClassVar[bool] = False

    @property
    def residual(self) -> bool:
        """The method prunes hidden dimensions: analyze with the residual stream."""
        return False

    @property
    def needs_plan(self) -> bool:
        """The method cannot place its masks without a Plan."""
        return False

    @property
    def structured(self) -> bool:
        """The method removes whole heads / neurons (physically smaller after strip)."""
        return False

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text, for every init field."""
        return {f.name: help_of(f) for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def own_fields(cls, base: type) -> list[dataclasses.Field]:
        """The fields this config adds to ``base`` (its own options on the command line)."""
        common = {f.name for f in dataclasses.fields(base)}
        return [f for f in dataclasses.fields(cls) if f.name not in common and f.init]

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.init}

    def replace(self, **changes: Any) -> "MethodConfig":
        return dataclasses.replace(self, **changes)
