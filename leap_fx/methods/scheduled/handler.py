"""Gradual pruning on a schedule: the cubic density schedule (LEAP Eq. 1, after Zhu & Gupta 2017 and
Sanh et al. 2020) driving ``ScheduledTopK`` owners. Shared by ``magnitude.py`` and ``movement.py``.

Written for the *density* ``d = 1 - s`` that is kept::

    d_t = d_0                                                           t <  t_0
    d_t = d_f + (d_0 - d_f) * (1 - (t - t_0) / (t_f - t_c - t_0))**3    t_0 <= t < t_f - t_c
    d_t = d_f                                                           t >= t_f - t_c

Eq. 1 as printed in the paper has ``t - (t_0 + t_c)`` in the numerator and ``t >= t_c`` in the last
case, which do not make the curve continuous; the form above is the one movement pruning's
reference code uses (it reaches ``d_f`` exactly at ``t_f - t_c``, continuously).
"""
from __future__ import annotations

from typing import Optional

from leap_fx.costs import CostModel, target_costs, uniform_keep
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.base import TrainedMethod

__all__ = ["cubic_density", "Scheduled"]


def cubic_density(step: int, total_steps: int, final_density: float, initial_density: float = 1.0,
                  warmup_steps: int = 0, cooldown_steps: int = 0) -> float:
    """Density kept at ``step`` under the cubic schedule (Eq. 1)."""
    if not 0.0 < final_density <= initial_density <= 1.0:
        raise ValueError(f"need 0 < final_density <= initial_density <= 1, got "
                         f"{final_density}, {initial_density}")
    ramp = total_steps - cooldown_steps - warmup_steps
    if ramp <= 0:
        raise ValueError(f"warmup_steps ({warmup_steps}) + cooldown_steps ({cooldown_steps}) must be "
                         f"smaller than total_steps ({total_steps})")
    if step < warmup_steps:
        return float(initial_density)
    if step >= total_steps - cooldown_steps:
        return float(final_density)
    frac = 1.0 - (step - warmup_steps) / ramp
    return float(final_density + (initial_density - final_density) * frac ** 3)


class Scheduled(TrainedMethod):
    """Every owner keeps ``k = d_t`` of the cubic schedule; dense (k = 1) until it starts.

    The schedule runs in the target's unit: for ``flops:`` / ``latency:`` targets every owner keeps the
    same fraction ``k``, the largest whose cost (``leap_fx.costs``) stays within ``d_t``."""

    log_keys = ("scheduled_density",)
    progress_keys = ("scheduled_density",)
    costs: Optional[CostModel] = None  # the cost model of a flops / latency target (set by prepare)

    def prepare(self, model, plan):
        super().prepare(model, plan)
        if self.config.goal.unit != "density":
            self.costs = target_costs(self.config, model, plan)

    def density_at(self, step: int) -> float:
        c, n = self.config, self.total_steps
        return cubic_density(step, n, c.goal.value, 1.0, warmup_steps=int(c.prune_warmup_ratio * n),
                             cooldown_steps=int(c.prune_cooldown_ratio * n))

    def apply_density(self, model, step: int) -> float:
        d = self.density_at(step)
        k = d if self.costs is None else uniform_keep(self.costs, d)
        for owner in owners(model).values():
            owner.set_k(k)
        return d

    def on_step(self, model, step):
        return {"scheduled_density": self.apply_density(model, step)}

    def finalize(self, model):
        self.apply_density(model, self.total_steps)
        return super().finalize(model)
