"""LEAP as a stock ``torch.nn.utils.prune`` method: a frozen Top-k(sigmoid(sigma/T)) mask (Eq. 3-4).

``LeapPruning`` works with ``LeapPruning.apply``, ``prune.global_unstructured`` (it then keeps the
top k of the concatenated importance scores) and ``prune.remove``. ``leap_prune`` is the functional
form, in the style of ``prune.l1_unstructured``. ``leap_fx.freeze`` uses it to turn trained masks
into the prune API's ``weight_orig`` / ``weight_mask`` pair.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
from torch.nn.utils import prune

from leap_fx.masks.carrier import expand_block
from leap_fx.masks.topk import keep_count, topk_mask

Number = Union[float, torch.Tensor]


class LeapPruning(prune.BasePruningMethod):
    """Keep ``ceil(k n)`` granules with the largest ``scores``, ``k = sigmoid(sigma / T)``.

    Args:
        scores: score grid of shape ``(rows / block[0], cols / block[1])`` of the pruned tensor (stored
            layout), or None to rank the tensor handed to ``compute_mask`` itself (the importance scores
            given to ``apply`` / ``global_unstructured``, else the raw parameter).
        sigma, temperature: threshold and T of Eq. 4 (floats or tensors).
        block: granule size; must be ``(1, 1)`` when ``scores`` is None.
    """

    PRUNING_TYPE = "unstructured"  # masks of successive prunings multiply elementwise (any block size)

    def __init__(self, scores: Optional[torch.Tensor] = None, sigma: Number = 0.0,
                 temperature: Number = 1.0, block: tuple[int, int] = (1, 1)):
        self.scores = None if scores is None else torch.as_tensor(scores).detach().clone()
        self.sigma = torch.as_tensor(sigma).detach().clone()
        self.temperature = float(temperature)
        self.block = (int(block[0]), int(block[1]))
        if self.temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if self.scores is None and self.block != (1, 1):
            raise ValueError(f"block={self.block} needs explicit scores of the block grid's shape; "
                             f"pass scores= or use block=(1, 1)")

    def k(self) -> float:
        return float(torch.sigmoid(self.sigma / self.temperature).item())

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        scores = t if self.scores is None else self.scores.to(t.device)
        grid_shape = tuple(s // b for s, b in zip(t.shape, self.block)) if t.dim() == 2 else tuple(t.shape)
        if tuple(scores.shape) != grid_shape:
            raise ValueError(f"LeapPruning scores shape {tuple(scores.shape)} does not match tensor "
                             f"{tuple(t.shape)} with block {self.block}: expected {grid_shape}")
        grid = topk_mask(scores.to(torch.float32), keep_count(self.k(), scores.numel()))
        mask = expand_block(grid, self.block) if self.block != (1, 1) else grid
        if mask.shape != t.shape:
            raise ValueError(f"block {self.block} does not divide tensor of shape {tuple(t.shape)}")
        return mask.to(default_mask.dtype) * default_mask

    @classmethod
    def apply(cls, module: nn.Module, name: str, scores: Optional[torch.Tensor] = None, sigma: Number = 0.0,
              temperature: Number = 1.0, block: tuple[int, int] = (1, 1),
              importance_scores: Optional[torch.Tensor] = None):
        return super().apply(module, name, scores=scores, sigma=sigma, temperature=temperature,
                             block=block, importance_scores=importance_scores)


def leap_prune(module: nn.Module, name: str = "weight", scores: Optional[torch.Tensor] = None,
               sigma: Number = 0.0, temperature: Number = 1.0, block: tuple[int, int] = (1, 1)) -> nn.Module:
    """Prune ``module.<name>`` to the top ``sigmoid(sigma/T)`` of ``scores`` (default: ``|W|`` per block).

    Like ``prune.l1_unstructured``: adds ``<name>_orig`` / ``<name>_mask`` and a forward pre-hook;
    undo or bake with ``prune.remove``. Returns the module.
    """
    if scores is None:
        w = getattr(module, name).detach().abs()
        if tuple(block) != (1, 1):
            r, c = block
            if w.dim() != 2 or w.shape[0] % r or w.shape[1] % c:
                raise ValueError(f"block {tuple(block)} does not divide {name} of shape {tuple(w.shape)}: "
                                 f"choose a block dividing both dims")
            w = w.view(w.shape[0] // r, r, w.shape[1] // c, c).sum((1, 3))
        scores = w
    LeapPruning.apply(module, name, scores=scores, sigma=sigma, temperature=temperature, block=block)
    return module
