"""Training methods, one class per ``TrainConfig.method``: what to prepare, optimise, add to the loss
and fold at the end. The loop (``loop.py``) only talks to this interface; ``METHODS`` maps names to
classes (the baselines live in ``baselines.py``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .schedules import cubic_density

PAPER_MASK_LR = 1e-2  # App. A


def auto_mask_lr(leap_config, total_steps: int, warmup_ratio: float = 0.1) -> float:
    """A σ learning rate that lets σ reach the target within ~60% of the run.

    Adam moves σ by about ``lr × (LR multiplier)`` per step when the regulariser dominates, so the
    distance from ``σ_0`` (5T, App. A) to ``T·logit(R_target)`` needs ``lr ≈ Δσ / area``, where
    ``area`` is the sum of warmup+linear-decay multipliers up to 60% of the steps. The paper's 1e-2
    suits its ~10^5-step runs; short runs need more (S is unaffected: zero-initialised Top-K
    ranking is invariant to its learning rate). Never below the paper's 1e-2. The factor 4.5 was
    tuned on tiny BERTs (120 and 640 steps, T=32, R_target=0.3, σ without momentum): R ends within
    one granule of the target in both.
    """
    r = min(max(leap_config.target_density, 1e-6), 1 - 1e-6)
    t = leap_config.temperature
    travel = leap_config.sigma0 - t * math.log(r / (1 - r))
    w, x = min(max(warmup_ratio, 0.0), 0.5), 0.6  # a warmup over half the run is clamped
    area = w / 2 + ((1 - w) ** 2 - (1 - x) ** 2) / (2 * (1 - w))  # ∫ multiplier over [0, 0.6]
    return max(PAPER_MASK_LR, 4.5 * travel / (area * max(1, total_steps)))


def split_sigma_group(groups: list[dict], model: nn.Module, sigma_beta1: float) -> list[dict]:
    """Move the σ thresholds out of ``leap_fx.param_groups``' "leap" group into a group of their own
    with Adam ``beta1 = sigma_beta1`` (S keeps the default betas).

    With momentum (0.9) σ runs past the target once L_reg (Eq. 5) switches off below it, by about
    ten steps' worth of σ learning rate; without momentum it settles at the target. Use 0.9 for the
    paper's plain Adam.
    """
    from leap_fx.lifecycle import owners
    sigmas = {id(o.sigma) for o in owners(model).values()}
    out = []
    for g in groups:
        if g.get("name") != "leap":
            out.append(g)
            continue
        sig = [p for p in g["params"] if id(p) in sigmas]
        rest = [p for p in g["params"] if id(p) not in sigmas]
        out.append({**g, "params": rest})
        if sig:
            out.append({**g, "params": sig, "name": "sigma", "betas": (sigma_beta1, 0.999)})
    return out


class Method:
    """Dense fine-tuning (the teacher): plain weights, no masks, no penalty."""

    name = "dense"
    uses_masks = False

    def __init__(self, config, leap_config=None, plan=None, total_steps: int = 1):
        self.config, self.leap_config, self.plan, self.total_steps = config, leap_config, plan, total_steps

    def setup(self, model: nn.Module) -> None:
        """Prepare ``model`` (register masks); must be idempotent-safe before a checkpoint load."""

    def mask_lr(self) -> float:
        """Learning rate of S and σ (App. A: 1e-2 unless the config sets one)."""
        return PAPER_MASK_LR if self.config.mask_lr is None else self.config.mask_lr

    def param_groups(self, model: nn.Module) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.config.lr,
                 "weight_decay": self.config.weight_decay}]

    def before_step(self, model: nn.Module, step: int) -> dict:
        """Schedules applied before the forward of ``step`` (0-based); returns values to log."""
        return {}

    def penalty(self, model: nn.Module) -> tuple[Optional[torch.Tensor], dict]:
        """Extra loss term (LEAP: λ·L_reg, Eq. 6) and its log values."""
        return None, {}

    def densities(self, model: nn.Module) -> dict[str, float]:
        """Measured mask density per governed weight name."""
        return {}

    def finish(self, model: nn.Module) -> nn.Module:
        """Bake masks into plain weights (fold)."""
        return model

    def state_dict(self, model: nn.Module) -> dict:
        """Method state that is not in the model's state_dict (saved in checkpoints)."""
        return {}

    def load_state_dict(self, model: nn.Module, state: dict) -> None:
        """Restore :meth:`state_dict` after a checkpoint load."""


class MaskedMethod(Method):
    """Shared by LEAP and the baselines: LeapMask parametrizations registered by ``leap_fx.prepare``."""

    uses_masks = True

    def setup(self, model):
        from leap_fx.lifecycle import owners
        if self.leap_config is None:
            raise ValueError(f"method {self.name!r} needs a LeapConfig (target density, granularity); "
                             f"pass leap_config=LeapConfig(target_density=...)")
        if not owners(model):
            import leap_fx
            leap_fx.prepare(model, self.leap_config, plan=self.plan)
        if not owners(model):
            raise ValueError("leap_fx.prepare registered no masks: check LeapConfig include/exclude patterns")

    def owners(self, model):
        from leap_fx.lifecycle import owners
        return owners(model)

    def param_groups(self, model):
        import leap_fx
        return leap_fx.param_groups(model, lr=self.config.lr, mask_lr=self.mask_lr(),
                                    weight_decay=self.config.weight_decay)

    def densities(self, model):
        from leap_fx.lifecycle import densities
        return densities(model)

    def finish(self, model):
        import leap_fx
        return leap_fx.fold(model) or model


class LeapMethod(MaskedMethod):
    """LEAP: learnable S and σ, adaptive λ·L_reg (Eq. 5-7)."""

    name = "leap"

    def param_groups(self, model):
        return split_sigma_group(super().param_groups(model), model, self.config.sigma_beta1)

    def mask_lr(self) -> float:
        if self.config.mask_lr is not None:
            return self.config.mask_lr
        return self.config.mask_lr_scale * auto_mask_lr(self.leap_config, self.total_steps, self.config.warmup_ratio)

    def setup(self, model):
        super().setup(model)
        import leap_fx
        self.regularizer = leap_fx.LeapRegularizer.from_config(model, self.leap_config)

    def penalty(self, model):
        value = self.regularizer()
        reg = self.regularizer
        return value, {"R": float(reg.R), "L_reg": float(reg.L_reg), "lambda": float(reg.lam)}


class ScheduledMethod(MaskedMethod):
    """Base of the baselines: every owner keeps ``fixed_k = d_t`` from the cubic schedule (Eq. 1)."""

    def density_at(self, step: int) -> float:
        c = self.config
        return cubic_density(step, self.total_steps, self.leap_config.target_density, 1.0,
                             warmup_steps=int(c.prune_warmup_ratio * self.total_steps),
                             cooldown_steps=int(c.prune_cooldown_ratio * self.total_steps))

    def setup(self, model):
        super().setup(model)
        for owner in self.owners(model).values():
            if owner.fixed_k is None:
                owner.fixed_k = 1.0  # dense until the schedule starts (sigma is not used)
            owner.sigma.requires_grad_(False)

    def before_step(self, model, step):
        d = self.density_at(step)
        for owner in self.owners(model).values():
            owner.fixed_k = d
            owner.sigma.requires_grad_(False)
        return {"scheduled_density": d}

    def state_dict(self, model):
        """The scheduled ``fixed_k`` of every owner: the magnitude baseline re-ranks under the
        previous step's mask, so a resumed run needs it before its first step."""
        return {"fixed_k": {key: o.fixed_k for key, o in self.owners(model).items()}}

    def load_state_dict(self, model, state):
        for key, k in state.get("fixed_k", {}).items():
            self.owners(model)[key].fixed_k = k

    def finish(self, model):
        d = self.density_at(self.total_steps)
        for owner in self.owners(model).values():
            owner.fixed_k = d
        return super().finish(model)


def _registry() -> dict[str, type]:
    from .baselines import MagnitudeMethod, MovementMethod
    return {"dense": Method, "leap": LeapMethod, "movement": MovementMethod, "magnitude": MagnitudeMethod}


METHOD_NAMES = ("dense", "leap", "movement", "magnitude")


def make_method(config, leap_config=None, plan=None, total_steps: int = 1) -> Method:
    table = _registry()
    if config.method not in table:
        raise ValueError(f"unknown method {config.method!r}: use one of {sorted(table)}")
    return table[config.method](config, leap_config, plan, total_steps)
