"""LEAP's config (plain data): Eq. 4's temperature, Eq. 7's lambdas, the thresholds' learning rate.

The job's short runs (``job``): measured on MiniLM-L6 / Rotten Tomatoes (quick, target 0.3), and, so
the main job's ONNX is really smaller and faster, ``granularity="structured"`` at ``target="flops:0.5"``
(whole heads and neurons, half the FLOPs; see ``handler.py`` for why each value):
``lambda_min`` 80, ``mask_lr_scale`` 0.3, ``score_init="magnitude"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.spec.fields import option
from leap_fx.spec.mask import SIGMA_GRADS, MaskSpec
from leap_fx.spec.method import JobDefaults

__all__ = ["LeapConfig", "SCORE_INITS", "RATIOS"]

SCORE_INITS = ("zero", "magnitude")
RATIOS = ("kept", "soft")  # R(sigma) from the granules Top-K keeps, or from k(sigma) itself (Eq. 5)


@dataclass
class LeapConfig(MaskSpec):
    """LEAP settings. ``goal`` (``target`` / ``target_density``) is R_target of Eq. 5, in its unit."""

    method: ClassVar[str] = "leap"
    handler: ClassVar[str] = "leap_fx.methods.leap.handler:Leap"
    job: ClassVar[JobDefaults] = JobDefaults(
        granularity="structured", target="flops:0.5",
        options={"lambda_min": 80.0, "mask_lr_scale": 0.3, "score_init": "magnitude"})

    temperature: float = option(32.0, "T of Eq. 4 (paper: 16..64)")
    sigma_init: Optional[float] = option(None, "initial sigma (default 5 T, App. A)")
    lambda_max: float = option(160.0, "lambda_max of Eq. 7")
    lambda_min: float = option(10.0, "lambda_min of Eq. 7 (job default 80: short runs)")
    sigma_grad: str = option("chain", "sigma's task gradient: chain (with k'(sigma)) or ste (authors' code)")
    ratio: str = option("kept", "R counts the kept granules (kept) or k itself (soft, the paper)")
    mask_lr: Optional[float] = option(None, "learning rate of S and sigma (default: mask_lr_scale x an LR "
                                            "scaled to the run)")
    mask_lr_scale: float = option(1.0, "factor on the automatic S/sigma learning rate (job default 0.3)")
    sigma_beta1: float = option(0.0, "Adam beta1 of sigma (0: no momentum, settles at the target; paper 0.9)")
    score_init: str = option("zero", "S at the start: magnitude prior (job default) or zero (paper)")

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (paper uses 16..64)")
        if self.lambda_min > self.lambda_max:
            raise ValueError(f"lambda_min={self.lambda_min} > lambda_max={self.lambda_max}: "
                             f"swap them or lower lambda_min (paper: lambda_min=10, lambda_max in 40..320)")
        if self.lambda_min < 0:
            raise ValueError(f"lambda_min={self.lambda_min} must be >= 0")
        for name, value, allowed in (("sigma_grad", self.sigma_grad, SIGMA_GRADS), ("ratio", self.ratio, RATIOS),
                                     ("score_init", self.score_init, SCORE_INITS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: use one of {allowed}")
        if self.mask_lr is not None and not self.mask_lr > 0 or not self.mask_lr_scale > 0:
            raise ValueError(f"mask_lr={self.mask_lr} and mask_lr_scale={self.mask_lr_scale} must be > 0")
        if not 0.0 <= self.sigma_beta1 < 1.0:
            raise ValueError(f"sigma_beta1={self.sigma_beta1} must be in [0, 1)")

    @property
    def sigma0(self) -> float:
        """Initial threshold sigma (App. A: 5 T)."""
        return 5.0 * self.temperature if self.sigma_init is None else float(self.sigma_init)
