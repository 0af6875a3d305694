"""Hard-concrete (L0) gates (Louizos et al. 2018) as CoFi uses them: ``HardConcrete``, one mask owner.

Per granule a gate ``z in [0, 1]`` with a learned ``log_alpha`` (CoFi Sec. 3.2; stretch ``(l, r) =
(-0.1, 1.1)``, temperature ``beta = 2/3``)::

    u ~ U(0, 1),  s = sigmoid((log u - log(1 - u) + log_alpha) / beta),  z = min(1, max(0, l + (r - l) s))

``z`` is exactly 0 with probability ``Q(0) = P(z <= 0) = sigmoid(beta log(-l / r) - log_alpha)``, so the
expected kept fraction is ``mean(1 - Q(0))`` (``expected_density``, differentiable in ``log_alpha``:
what CoFi's expected size and Lagrangian read); ``P(z = 1) = sigmoid(log_alpha - beta log((1 - l) /
(r - 1)))``.

Deterministic gate (evaluation and ``fold``; CoFi's ``_deterministic_z``, after Wang et al. 2020): the
``round(sum Q(0))`` granules with the smallest ``log_alpha`` are 0 (``round`` is Python's), the others
``sigmoid(0.8 log_alpha / beta)``, the reference code's stand-in for their expected value. It is a
function of ``log_alpha`` only, so what evaluation sees is exactly what ``fold`` bakes.

One sample per training step, shared: every weight a gate governs (a head's q/k/v rows and out
columns, the masked norms of a hidden dim) must see the same ``z``, so the uniform noise ``u`` is a
buffer redrawn by ``resample()`` (the method calls it once per step) and ``mask()`` is a function of
``(log_alpha, u)``. ``mode``: ``"sample"`` (training), ``"off"`` (all ones: CoFi's dense warm-up),
``"frozen"`` (the deterministic gate, no gradient: the final fine-tune).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from leap_fx.masks.owner import MaskOwner

LIMITS = (-0.1, 1.1)
TEMPERATURE = 2.0 / 3.0
VALUE_FACTOR = 0.8              # sigmoid(0.8 log_alpha / beta): the deterministic gate's kept value
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # CoFi's constrain_parameters
EPS = 1e-6
MODES = ("sample", "off", "frozen")


def log_alpha_for(drop_rate: float) -> float:
    """``log_alpha`` with ``P(z = 0) = drop_rate`` (inverse of ``Q(0)``)."""
    if not 0.0 < drop_rate < 1.0:
        raise ValueError(f"drop_rate={drop_rate} must be in (0, 1)")
    l, r = LIMITS
    return TEMPERATURE * math.log(-l / r) - math.log(drop_rate / (1.0 - drop_rate))


class HardConcrete(MaskOwner):
    """L0 gates on one granule grid (see the module docstring); real-valued (``binary = False``)."""

    binary = False

    def __init__(self, shape: Sequence[int], key: str = "", device=None, drop_rate: float = 0.01):
        super().__init__(shape, key, device)
        self.log_alpha = nn.Parameter(torch.full(self.grid_shape, log_alpha_for(drop_rate), device=device))
        self.register_buffer("noise", torch.empty(self.grid_shape, device=device), persistent=False)
        self.mode = "sample"
        self.resample()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: use one of {MODES}")
        self.mode = mode

    @torch.no_grad()
    def resample(self) -> None:
        """Draw this step's uniform noise (every weight the gate governs sees the same ``z``)."""
        self.noise.uniform_(EPS, 1.0 - EPS)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_alpha.clamp_(*LOG_ALPHA_RANGE)

    def closed(self) -> torch.Tensor:
        """``Q(0) = P(z = 0)`` per granule (differentiable)."""
        l, r = LIMITS
        return torch.sigmoid(TEMPERATURE * math.log(-l / r) - self.log_alpha).clamp(EPS, 1.0 - EPS)

    def keep_prob(self) -> torch.Tensor:
        """``1 - Q(0) = P(z != 0)`` per granule (differentiable)."""
        return 1.0 - self.closed()

    def sample(self) -> torch.Tensor:
        l, r = LIMITS
        u = self.noise
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / TEMPERATURE)
        return (l + (r - l) * s).clamp(0.0, 1.0)

    def mask(self) -> torch.Tensor:
        if self.mode == "sample":
            return self.sample()
        return self.deterministic_mask()

    @torch.no_grad()
    def deterministic_mask(self) -> torch.Tensor:
        if self.mode == "off":
            return torch.ones_like(self.log_alpha)
        la = self.log_alpha.detach().reshape(-1)
        zeros = round(la.numel() - float(self.keep_prob().detach().sum()))
        value = torch.sigmoid(VALUE_FACTOR * la / TEMPERATURE)
        if zeros > 0:
            value[torch.topk(la, zeros, largest=False).indices] = 0.0
        return value.view(self.grid_shape)

    def expected_density(self) -> torch.Tensor:
        return self.keep_prob().mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}"
