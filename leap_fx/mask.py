"""LEAP masks: learnable scores S and threshold sigma (paper Sec. 3.2, Eq. 3-4), as a parametrization.

``LeapScores`` owns S (one score per granule) and sigma; ``k() = sigmoid(sigma / T)`` (Eq. 4) is the kept
fraction and the hard mask keeps the Top-k of S (Eq. 3). ``LeapMask`` is the parametrization
``W -> W * expand(mask)`` registered with ``torch.nn.utils.parametrize``; one LeapMask per parameter
tensor, combining one or more *segments* (a whole-tensor block grid, or tied slices of a family).

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

``fixed_k`` overrides k (sigma then gets no gradient): used for the movement-pruning baseline with a
cubic schedule. The count ``k`` is read with ``.item()`` (data dependent); masks are folded before export.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn


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
    """Forward: Top-K mask (Eq. 3). Backward: straight-through to S; sigma as documented above."""

    @staticmethod
    def forward(ctx, scores, sigma, k: float, dk: Optional[float]):
        mask = topk_mask(scores, keep_count(k, scores.numel()))
        ctx.save_for_backward(mask)
        ctx.dk = dk  # k'(sigma) ("chain"), 1.0 ("ste") or None (fixed k)
        ctx.sigma_shape = sigma.shape
        return mask

    @staticmethod
    def backward(ctx, grad_mask):
        (mask,) = ctx.saved_tensors
        g_sigma = None
        if ctx.dk is not None and ctx.needs_input_grad[1]:
            g_sigma = (ctx.dk * (mask * grad_mask).sum()).reshape(ctx.sigma_shape)
        return grad_mask, g_sigma, None, None


class LeapScores(nn.Module):
    """Learnable state of one LEAP owner: scores S (granule grid) and threshold sigma (Eq. 4)."""

    def __init__(self, shape: Sequence[int], temperature: float = 32.0, sigma_init: Optional[float] = None,
                 sigma_grad: str = "chain", fixed_k: Optional[float] = None, key: str = "", device=None):
        super().__init__()
        if sigma_grad not in ("chain", "ste"):
            raise ValueError(f"sigma_grad={sigma_grad!r}: use 'chain' or 'ste'")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.scores = nn.Parameter(torch.zeros(tuple(shape), device=device))  # movement pruning's constant init
        sigma0 = 5.0 * temperature if sigma_init is None else float(sigma_init)
        self.sigma = nn.Parameter(torch.tensor(sigma0, device=device))
        self.temperature = float(temperature)
        self.sigma_grad = sigma_grad
        self.fixed_k = fixed_k
        self.count = 0  # weight elements governed (summed over members), for R(sigma)
        self.key = key  # family FQN (tied) or weight name (per matrix)

    @property
    def granules(self) -> int:
        return self.scores.numel()

    def k(self) -> torch.Tensor:
        """Kept fraction k(sigma) = sigmoid(sigma / T) (Eq. 4), or ``fixed_k`` (no grad) when set."""
        if self.fixed_k is not None:
            return torch.tensor(float(self.fixed_k), device=self.sigma.device)
        return torch.sigmoid(self.sigma / self.temperature)

    def mask(self) -> torch.Tensor:
        """Granule-grid 0/1 mask with STE gradients to S and sigma."""
        if self.fixed_k is not None:
            return _TopKSTE.apply(self.scores, self.sigma, float(self.fixed_k), None)
        with torch.no_grad():
            k = torch.sigmoid(self.sigma / self.temperature)
        dk = float(k * (1 - k) / self.temperature) if self.sigma_grad == "chain" else 1.0
        return _TopKSTE.apply(self.scores, self.sigma, k.item(), dk)

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        """Granule-grid 0/1 mask (no autograd)."""
        return topk_mask(self.scores, keep_count(float(self.k().item()), self.granules))

    def extra_repr(self) -> str:
        fk = f", fixed_k={self.fixed_k}" if self.fixed_k is not None else ""
        return f"key={self.key!r}, granules={tuple(self.scores.shape)}, count={self.count}, " \
               f"T={self.temperature}, sigma_grad={self.sigma_grad}{fk}"


def _expand_block(grid: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    if block == (1, 1):
        return grid
    return grid.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)


class LeapMask(nn.Module):
    """Parametrization ``W -> W * M``; M is 1 except where segments say otherwise.

    ``LeapMask(owner, block)`` masks the whole tensor with ``owner``'s score grid expanded by ``block``
    (stored layout: ``owner.scores.shape == (rows/block[0], cols/block[1])``). ``add_tied`` adds a slice of
    a family (Plan geometry) governed by a shared owner, granule-major with ``unit`` indices per granule.
    """

    def __init__(self, owner: Optional[LeapScores] = None, block: tuple[int, int] = (1, 1)):
        super().__init__()
        self.owners = nn.ModuleList()
        self.segments: list[tuple] = []  # ("block", owner_idx, block) | ("tied", idx, axis, start, size, unit, group)
        if owner is not None:
            self.add_block(owner, block)

    def _index(self, owner: LeapScores) -> int:
        for i, o in enumerate(self.owners):
            if o is owner:
                return i
        self.owners.append(owner)
        return len(self.owners) - 1

    def add_block(self, owner: LeapScores, block: tuple[int, int] = (1, 1)) -> "LeapMask":
        block = (int(block[0]), int(block[1]))
        owner.count += owner.scores.numel() * block[0] * block[1]
        self.segments.append(("block", self._index(owner), block))
        return self

    def add_tied(self, owner: LeapScores, shape: Sequence[int], axis: int, start: int, size: int,
                 unit: int, group: int = 1) -> "LeapMask":
        """Indices ``start:start+size`` along ``axis`` (granule-major, ``unit`` each) follow ``owner``.

        ``group > 1`` (grouped-query attention): the slice has ``granules / group`` granules and each one's
        mask is the max over the ``group`` owner granules that read it.
        """
        if size != (owner.granules // group) * unit:
            raise ValueError(f"slice size {size} != {owner.granules // group} granules x unit {unit}")
        owner.count += size * (math.prod(shape) // shape[axis])
        self.segments.append(("tied", self._index(owner), axis, start, size, unit, group))
        return self

    def _segment_mask(self, seg, grid: torch.Tensor, shape) -> torch.Tensor:
        if seg[0] == "block":
            return _expand_block(grid, seg[2])
        _, _, axis, start, size, unit, group = seg
        vec = grid.reshape(-1)
        if group > 1:
            vec = vec.view(-1, group).amax(1)
        vec = vec.repeat_interleave(unit) if unit > 1 else vec
        view = [1] * len(shape)
        view[axis] = size
        return vec.view(view)

    def mask(self, shape: Sequence[int], hard: bool = False, dtype=None) -> torch.Tensor:
        """Full-size mask for a weight of ``shape`` (``hard=True``: no autograd)."""
        grids = [o.hard_mask() if hard else o.mask() for o in self.owners]
        full: Optional[torch.Tensor] = None
        for seg in self.segments:
            part = self._segment_mask(seg, grids[seg[1]], shape)
            if seg[0] == "block":
                if tuple(part.shape) != tuple(shape):
                    raise ValueError(f"LEAP block grid {tuple(grids[seg[1]].shape)} x block {seg[2]} != weight "
                                     f"shape {tuple(shape)}: give scores of shape (rows/block, cols/block)")
                full = part if full is None else full * part
                continue
            axis, start, size = seg[2], seg[3], seg[4]
            if full is None:
                full = torch.ones(tuple(shape), dtype=part.dtype, device=part.device)
            mid = full.narrow(axis, start, size) * part
            pieces = [full.narrow(axis, 0, start), mid,
                      full.narrow(axis, start + size, shape[axis] - start - size)]
            full = torch.cat(pieces, axis)
        if full is None:
            raise ValueError("LeapMask has no segments: pass an owner or call add_block/add_tied")
        full = full.expand(tuple(shape))
        return full if dtype is None else full.to(dtype)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask(weight.shape, dtype=weight.dtype)

    def extra_repr(self) -> str:
        return ", ".join(f"{s[0]}{tuple(s[2:])}@{self.owners[s[1]].key or s[1]}" for s in self.segments)
