"""Targets in the unit the user cares about: ``Target.parse("flops:0.5")``, plain data (no torch).

- ``density``: fraction of the governed weight elements kept (LEAP's R of Eq. 5 as printed);
- ``flops``: fraction of the forward FLOPs of the prunable families at the run's sequence length;
- ``latency``: fraction of the dense model's onnxruntime latency on *this* machine (``latency:0.5``
  asks for a 2x speedup).

What a target costs on a model is ``leap_fx.costs``'s job; this module only parses and checks it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

__all__ = ["Target", "UNITS", "STRIPPED_UNITS", "DEFAULT_TARGET", "resolve_target"]

UNITS = ("density", "flops", "latency")
STRIPPED_UNITS = ("flops", "latency")  # units only removed heads / neurons change: need 'structured'
DEFAULT_TARGET = "density:0.3"


@dataclass(frozen=True)
class Target:
    """A target fraction ``value`` in ``unit`` (what is kept: 0.5 = half the FLOPs / half the latency)."""

    unit: str
    value: float

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"target unit {self.unit!r}: use one of {', '.join(UNITS)} "
                             f"(e.g. 'density:0.3', 'flops:0.5', 'latency:0.5')")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) \
                or not 0.0 < float(self.value) <= 1.0:
            raise ValueError(f"target {self.unit}:{self.value} is outside (0, 1]: pass the fraction to keep, "
                             f"e.g. '{self.unit}:0.5' keeps half")

    @classmethod
    def parse(cls, text: Union[str, float, "Target"]) -> "Target":
        """``"flops:0.5"`` -> ``Target("flops", 0.5)``; a bare number is a density."""
        if isinstance(text, Target):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls("density", float(text))
        unit, sep, value = str(text).strip().partition(":")
        if not sep:
            unit, value = "density", unit
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"target {text!r}: write UNIT:FRACTION, e.g. 'density:0.3', 'flops:0.5' or "
                             f"'latency:0.5'") from None
        if not math.isfinite(number):
            raise ValueError(f"target {text!r} is not a finite fraction: e.g. 'flops:0.5' keeps half")
        return cls(unit.strip().lower(), number)

    @property
    def needs_strip(self) -> bool:
        return self.unit in STRIPPED_UNITS

    def __str__(self) -> str:
        return f"{self.unit}:{self.value:g}"


def resolve_target(target: Optional[str], target_density: Optional[float]) -> Target:
    """One target from a spec's ``target`` and ``target_density`` fields (they must agree if both are given)."""
    if target is None and target_density is None:
        raise ValueError("no target: pass target='flops:0.5' (or 'density:0.3', 'latency:0.5') or target_density=0.3")
    if target is None:
        if isinstance(target_density, bool) or not isinstance(target_density, (int, float)) \
                or not 0.0 < float(target_density) <= 1.0:
            raise ValueError(f"target_density={target_density} is outside (0, 1]: pass the fraction of "
                             f"weights to keep, e.g. 0.3 keeps 30%")
        return Target("density", float(target_density))
    goal = Target.parse(target)
    if target_density is not None and (goal.unit != "density" or not math.isclose(goal.value, target_density)):
        raise ValueError(f"target={target!r} and target_density={target_density} disagree: pass one of them")
    return goal
