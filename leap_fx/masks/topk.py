"""Top-K owners: keep the ``ceil(k n)`` granules with the largest scores S (LEAP Eq. 3).

- ``LeapScores`` (LEAP): learnable scores S and threshold sigma, ``k = sigmoid(sigma / T)`` (Eq. 4).
- ``ScheduledTopK`` (magnitude / movement pruning): scores S (learned or written from outside) and
  a kept fraction ``k`` that the method sets every step (the cubic schedule, Eq. 1).

Top-K count: ``j = clamp(ceil(k * n), 1, n)`` granules are kept (``n`` = number of granules), so the
measured density is in ``[k, k + 1/n)`` and at least one granule per owner always survives.

Straight-through estimator (Bengio et al. 2013, as in the paper): dL/dS = dL/dm (identity through
Top-K), so ``S.grad[g] = sum over the elements of granule g, over all tied members, of dL/dW' * W``.
sigma gets the task gradient via the same STE. ``sigma_grad`` chooses how:

- ``"chain"`` (default): ``dL/dsigma = k'(sigma) * sum_g m_g dL/dm_g`` with ``k' = sigmoid'(sigma/T)/T``.
  Then both the task gradient and the regulariser's (Eq. 5 via R(sigma)) are derivatives through the
  same k(sigma), so their "competition" (Sec. 3.2) does not depend on where sigma sits on the sigmoid.
- ``"ste"``: ``dL/dsigma = sum_g m_g dL/dm_g``, the authors' v1 code (the sigmoid sat inside ``.item()``
  so its derivative was dropped).

The count ``k`` is read with ``.item()`` (data dependent); masks are folded before export.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from leap_fx.masks.owner import MaskOwner
from leap_fx.spec.mask import SIGMA_GRADS


def keep_count(k: float, n: int) -> int:
    """Number of granules kept: ``clamp(ceil(k n), 1, n)`` (tiny tolerance against float round-up)."""
    return int(min(n, max(1, math.ceil(k * n - 1e-6))))


def topk_mask(scores: torch.Tensor, j: int) -> torch.Tensor:
    """0/1 tensor shaped like ``scores`` with exactly ``j`` ones at the largest scores (torch.topk, no sort)."""
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if j >= n:
        return torch.ones_like(scores)
    if j <= n // 2:
        out = torch.zeros_like(flat)
        out[torch.topk(flat, j, largest=True, sorted=False).indices] = 1.0
    else:  # cheaper: drop the n - j smallest
        out = torch.ones_like(flat)
        out[torch.topk(flat, n - j, largest=False, sorted=False).indices] = 0.0
    return out.view_as(scores)


class _TopKSTE(torch.autograd.Function):
    """Forward: Top-K mask (Eq. 3). Backward: straight-through to S; to sigma times ``dk`` (if given)."""

    @staticmethod
    def forward(ctx, scores, sigma, k: float, dk: Optional[float]):
        mask = topk_mask(scores, keep_count(k, scores.numel()))
        ctx.save_for_backward(mask)
        ctx.dk = dk
        ctx.sigma_shape = sigma.shape
        return mask

    @staticmethod
    def backward(ctx, grad_mask):
        (mask,) = ctx.saved_tensors
        g_sigma = None
        if ctx.dk is not None and ctx.needs_input_grad[1]:
            g_sigma = (ctx.dk * (mask * grad_mask).sum()).reshape(ctx.sigma_shape)
        return grad_mask, g_sigma, None, None


class LeapScores(MaskOwner):
    """LEAP's learnable state of one owner: scores S (granule grid) and threshold sigma (Eq. 4)."""

    def __init__(self, shape: Sequence[int], temperature: float = 32.0, sigma_init: Optional[float] = None,
                 sigma_grad: str = "chain", key: str = "", device=None):
        super().__init__(shape, key, device)
        if sigma_grad not in SIGMA_GRADS:
            raise ValueError(f"sigma_grad={sigma_grad!r}: use 'chain' or 'ste'")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.scores = nn.Parameter(torch.zeros(self.grid_shape, device=device))  # movement pruning's init
        sigma0 = 5.0 * temperature if sigma_init is None else float(sigma_init)
        self.sigma = nn.Parameter(torch.tensor(sigma0, device=device))
        self.temperature = float(temperature)
        self.sigma_grad = sigma_grad

    def k(self) -> torch.Tensor:
        """Kept fraction k(sigma) = sigmoid(sigma / T) (Eq. 4)."""
        return torch.sigmoid(self.sigma / self.temperature)

    def mask(self) -> torch.Tensor:
        """Granule-grid 0/1 mask with STE gradients to S and sigma."""
        with torch.no_grad():
            k = self.k()
        dk = float(k * (1 - k) / self.temperature) if self.sigma_grad == "chain" else 1.0
        return _TopKSTE.apply(self.scores, self.sigma, k.item(), dk)

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        return topk_mask(self.scores, keep_count(float(self.k().item()), self.granules))

    def expected_density(self) -> torch.Tensor:
        return self.k()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, T={self.temperature}, sigma_grad={self.sigma_grad}"


class ScheduledTopK(MaskOwner):
    """Top-``k`` of scores S with ``k`` set from outside (a buffer, so checkpoints carry it).

    ``learn_scores=True`` (movement pruning): S is a trained parameter (STE gradient, as LEAP's).
    ``False`` (magnitude pruning): S is written by the method (``set_scores``) and never trained.
    """

    def __init__(self, shape: Sequence[int], learn_scores: bool = True, key: str = "", device=None):
        super().__init__(shape, key, device)
        self.scores = nn.Parameter(torch.zeros(self.grid_shape, device=device), requires_grad=learn_scores)
        self.register_buffer("k", torch.tensor(1.0, device=device))

    def set_k(self, k: float) -> None:
        self.k.fill_(float(k))

    @torch.no_grad()
    def set_scores(self, scores: torch.Tensor) -> None:
        self.scores.copy_(scores.reshape(self.grid_shape))

    def mask(self) -> torch.Tensor:
        return _TopKSTE.apply(self.scores, self.k, float(self.k), None)

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        return topk_mask(self.scores, keep_count(float(self.k), self.granules))

    def expected_density(self) -> torch.Tensor:
        return self.k.clone()
