"""Schedules: learning rate (linear warmup, then linear decay) and the cubic sparsity schedule.

Cubic schedule (LEAP paper Eq. 1, after Zhu & Gupta 2017 and Sanh et al. 2020), written for the
*density* ``d = 1 - s`` that is kept::

    d_t = d_0                                              t <  t_0
    d_t = d_f + (d_0 - d_f) * (1 - (t - t_0) / (t_f - t_c - t_0))**3    t_0 <= t < t_f - t_c
    d_t = d_f                                              t >= t_f - t_c

Eq. 1 as printed in the paper has ``t - (t_0 + t_c)`` in the numerator and ``t >= t_c`` in the last
case, which do not make the curve continuous; the form above is the one movement pruning's
reference code uses (it reaches ``d_f`` exactly at ``t_f - t_c``, continuously).
"""
from __future__ import annotations

import torch


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


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: ``step / warmup`` during warmup, then linear decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def lr_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """A ``LambdaLR`` applying :func:`warmup_linear` to every parameter group (state_dict-able)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear(step, warmup_steps, total_steps))
