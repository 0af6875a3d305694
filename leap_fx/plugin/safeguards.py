"""The job's safeguards for a loop of the user's own: a mask learning rate that can reach the target in the
declared steps (else a clear error, before training), and a loud ``PruningWarning`` at ``fold`` / ``strip``
when the target was missed or nothing was removed (a LEAP run whose R stayed at 1.0 used to fold and
strip nothing, silently).

- ``check_mask_lr(method, steps)``: for the methods whose mask state learns at a rate of its own, a
  distance it must cover, and Adam moving a parameter by at most about its learning rate per step (the
  bound is necessary, not sufficient: a rate that passes may still miss, and the warning at finish says so):
  LEAP's thresholds start at ``sigma_0`` (5T) and must reach ``T logit(R_t)``, so a fixed ``mask_lr``
  with ``mask_lr * steps`` below that distance cannot get there; CoFi's gates start at ``log_alpha_for(
  drop_rate_init)`` and move only in the pruning phase (between the dense warm-up and the frozen
  fine-tune), so a fixed ``gate_lr`` that, even with every gate moved that far together, leaves the
  expected size above the target by more than the tolerance cannot reach it. Unset, ``mask_lr`` /
  ``gate_lr`` are sized to the declared steps (``auto_mask_lr`` / ``auto_gate_lr``): always enough. No
  other method has such a rate: magnitude / movement / SparseBERT prune on a schedule of the steps
  (movement's scores decide *which*, not *how many*), one-shot methods do not train; CoFi's ``lambda_lr``
  sets how hard the Lagrangian pulls, not how far a gate can move (Adam normalises the pull), so it has
  no such bound. For every method a missed target is the ``PruningWarning`` at ``finish`` (below);
- ``achieved(config, model, plan, method)``: the fraction the current hard masks keep, in the target's
  unit (CoFi: what its gates keep, hidden dimensions and whole sub-layers included: ``ExpectedSize.realised``);
- ``fold(model)`` / ``strip(model, plan, example)``: the library's, warning when every mask keeps
  everything / when strip removed no parameter.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from leap_fx.costs import target_costs
from leap_fx.masks.hard_concrete import LOG_ALPHA_RANGE, HardConcrete, log_alpha_for
from leap_fx.masks.lifecycle import fold as fold_masks
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.cofi.handler import Cofi, auto_gate_lr
from leap_fx.methods.leap.handler import Leap, auto_mask_lr
from passes.strip import strip as strip_model

__all__ = ["MISS", "PruningWarning", "achieved", "check_mask_lr", "cofi_floor", "fold", "strip", "target_check"]

MISS = 0.05  # |achieved - target| above this (in the target's unit) is a missed target


class PruningWarning(UserWarning):
    """A pruning result that is not what was asked for (target missed, nothing removed)."""


def check_mask_lr(method, steps: int) -> None:
    """Refuse (ValueError) a LEAP ``mask_lr`` or a CoFi ``gate_lr`` that cannot take the masks to the target
    in ``steps`` (module doc); other methods have no such rate: nothing to check."""
    if isinstance(method, Leap):
        _check_leap(method, steps)
    elif isinstance(method, Cofi):
        _check_cofi(method, steps)


def _check_leap(method: Leap, steps: int) -> None:
    config = method.config
    r = min(max(config.goal.value, 1e-6), 1 - 1e-6)
    travel = config.sigma0 - config.temperature * math.log(r / (1 - r))
    lr = method.mask_lr()
    if lr * steps < travel:
        auto = config.mask_lr_scale * auto_mask_lr(config, steps, method.train_config.warmup_ratio)
        raise ValueError(f"mask_lr={lr:g} moves LEAP's thresholds at most {lr * steps:.3g} in the {steps} declared "
                         f"steps, but they must travel {travel:.3g} (sigma_0={config.sigma0:g} to T logit(R_t) for "
                         f"{config.goal}): leave mask_lr unset (automatic for {steps} steps: {auto:.3g}) or "
                         f"declare more steps")


def cofi_floor(method: Cofi) -> float:
    """The lowest expected size (a fraction of the dense one) CoFi's gates can reach in the method's
    ``total_steps``: every ``log_alpha`` moved down by ``gate_lr`` per pruning-phase step, together (moving
    them less only keeps more). A granule's cost is the product of its own gate, its sub-layer gate and (on
    the stream axis) the hidden gates, so with ``p`` the keep probability they all reach, the expected size
    is at least ``p ** factors``."""
    config = method.config
    start, _, tune = method.bounds()
    floor = max(log_alpha_for(config.drop_rate_init) - method.gate_lr() * (tune - start), LOG_ALPHA_RANGE[0])
    gate = HardConcrete((1,), drop_rate=config.drop_rate_init)
    with torch.no_grad():
        gate.log_alpha.fill_(floor)
        p = float(gate.keep_prob())
    return p ** (1 + int(config.prune_layers) + int(config.prune_hidden))


def _check_cofi(method: Cofi, steps: int) -> None:
    config = method.config
    if not config.gate_lr:  # automatic: sized to cross the clamp range twice in the target warm-up
        return
    floor = cofi_floor(method)
    if floor > config.kept + MISS:
        start, _, tune = method.bounds()
        raise ValueError(f"gate_lr={config.gate_lr:g} moves CoFi's gates (log_alpha) at most "
                         f"{config.gate_lr * (tune - start):.3g} in the {tune - start} pruning steps of the {steps} "
                         f"declared: even all moved that far, they keep {floor:.3f} of the {method.unit} in "
                         f"expectation, above the target {config.goal} (tolerance {MISS}): leave gate_lr unset "
                         f"(automatic for {steps} steps: {auto_gate_lr(config, steps):.3g}) or declare more steps")


def achieved(config, model: nn.Module, plan=None, method=None) -> float:
    """The fraction of the target's unit the current hard masks keep (1.0 on a model without masks). CoFi's
    hidden-dimension and sub-layer gates compound with its head / neuron gates, which the cost curves alone
    do not see: with ``method`` a prepared CoFi, its own count of the deterministic gates (what strip keeps)."""
    own = owners(model)
    if not own:
        return 1.0
    if isinstance(method, Cofi) and method.size is not None:
        return float(method.size.realised())
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
