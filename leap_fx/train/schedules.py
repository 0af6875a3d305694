"""Learning-rate schedule: linear warmup, then linear decay to 0 (LEAP App. A). The cubic density
schedule of the gradual-pruning baselines lives with them (``leap_fx.methods.scheduled``)."""
from __future__ import annotations

import torch


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: ``step / warmup`` during warmup, then linear decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def lr_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """A ``LambdaLR`` applying :func:`warmup_linear` to every parameter group (state_dict-able)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear(step, warmup_steps, total_steps))
