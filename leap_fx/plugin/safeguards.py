"""The job's safeguards for a loop of the user's own: a mask learning rate that can reach the target in the
declared steps (else a clear error, before training), and a loud ``PruningWarning`` at ``fold`` / ``strip``
when the target was missed or nothing was removed (a LEAP run whose R stayed at 1.0 used to fold and
strip nothing, silently).

- ``check_mask_lr(method, steps)``: LEAP's thresholds start at ``sigma_0`` (5T) and must reach
  ``T logit(R_t)``; Adam moves sigma by at most about its learning rate per step, so a fixed ``mask_lr``
  with ``mask_lr * steps`` below that distance cannot get there (unset, ``mask_lr`` is ``auto_mask_lr`` for
  the declared steps: always enough);
- ``achieved(config, model, plan)``: the fraction the current hard masks keep, in the target's unit;
- ``fold(model)`` / ``strip(model, plan, example)``: the library's, warning when every mask keeps
  everything / when strip removed no parameter.
"""
from __future__ import annotations

import math
import warnings

from torch import nn

from leap_fx.costs import target_costs
from leap_fx.masks.lifecycle import fold as fold_masks
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.leap.handler import Leap, auto_mask_lr
from passes.strip import strip as strip_model

__all__ = ["PruningWarning", "check_mask_lr", "achieved", "target_check", "fold", "strip", "MISS"]

MISS = 0.05  # |achieved - target| above this (in the target's unit) is a missed target


class PruningWarning(UserWarning):
    """A pruning result that is not what was asked for (target missed, nothing removed)."""


def check_mask_lr(method, steps: int) -> None:
    """Refuse (ValueError) a LEAP ``mask_lr`` that cannot move sigma to the target in ``steps`` (module doc)."""
    config = method.config
    if not isinstance(method, Leap):  # learnable thresholds only (SparseBERT's magnitude scorer has none)
        return
    r = min(max(config.goal.value, 1e-6), 1 - 1e-6)
    travel = config.sigma0 - config.temperature * math.log(r / (1 - r))
    lr = method.mask_lr()
    if lr * steps < travel:
        auto = config.mask_lr_scale * auto_mask_lr(config, steps, method.train_config.warmup_ratio)
        raise ValueError(f"mask_lr={lr:g} moves LEAP's thresholds at most {lr * steps:.3g} in the {steps} declared "
                         f"steps, but they must travel {travel:.3g} (sigma_0={config.sigma0:g} to T logit(R_t) for "
                         f"{config.goal}): leave mask_lr unset (automatic for {steps} steps: {auto:.3g}) or "
                         f"declare more steps")


def achieved(config, model: nn.Module, plan=None) -> float:
    """The fraction of the target's unit the current hard masks keep (1.0 on a model without masks)."""
    own = owners(model)
    if not own:
        return 1.0
    costs = target_costs(config, model, plan)
    kept = {k: int(o.hard_mask().sum()) for k, o in own.items() if k in costs.curves}
    return float(costs.fraction(kept))


def target_check(config, value: float) -> dict:
    """``{"target", "unit", "value", "achieved", "warning"?}``; the warning is also issued."""
    goal = config.goal
    out = {"target": str(goal), "unit": goal.unit, "value": goal.value, "achieved": value}
    if value >= 0.999 and goal.value < 0.99:
        out["warning"] = (f"nothing was pruned: the masks keep {value:.3f} of the {goal.unit} (target {goal}); with "
                          f"LEAP, R stayed at 1.0: declare the steps your loop runs (leap_fx.Pruner(..., steps=N)) "
                          f"so the mask learning rate is sized to them, and call pruner.step / pruner.loss each step")
    elif abs(value - goal.value) > MISS:
        out["warning"] = (f"target {goal} missed: the masks keep {value:.3f} of the {goal.unit} (tolerance {MISS}); "
                          f"train for the steps you declared, or more")
    if "warning" in out:
        warnings.warn(out["warning"], PruningWarning, stacklevel=3)
    return out


def fold(model: nn.Module) -> nn.Module:
    """``leap_fx.masks.fold``, warning when every mask keeps every granule (nothing was pruned)."""
    own = owners(model)
    if own and all(bool(o.hard_mask().all()) for o in own.values()):
        warnings.warn("fold: every mask keeps every weight: nothing was pruned (with LEAP in a loop of your own, "
                      "R stayed at 1.0: use leap_fx.Pruner(model, config, steps=N, ...) so the mask learning rate "
                      "reaches the target in your steps)", PruningWarning, stacklevel=2)
    return fold_masks(model)


def strip(model: nn.Module, plan, example_inputs, **kwargs):
    """``passes.strip.checked``, warning when it removed no parameter (every head and neuron still live)."""
    report = strip_model(model, plan, example_inputs, **kwargs)
    if report.params_after >= report.params_before:
        warnings.warn(f"strip removed nothing ({report.params_before} parameters before and after): no head or "
                      f"neuron of the Plan was zero after fold (unstructured masks are never stripped; a "
                      f"structured run whose target was missed keeps everything)", PruningWarning, stacklevel=2)
    return report
