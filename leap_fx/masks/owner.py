"""Mask owners: the state behind one granule grid, shared by every weight slice it governs.

The carrier (``carrier.GranuleMask``) asks its owners for a granule-grid mask and expands it onto
the weights. An owner implements:

- ``mask()``: the training-time mask (any autograd the method needs: straight-through Top-K,
  stochastic gates, real-valued scales);
- ``deterministic_mask()``: what evaluation and ``fold`` use (may be real-valued); default
  ``mask()`` itself, autograd included, for owners whose training mask is already deterministic
  (Top-K), so a model in eval mode still trains;
- ``hard_mask()``: 0/1, which granules survive (densities, strip decisions);
- ``expected_density()``: differentiable kept fraction (regularisers and Lagrangians read it).

``binary`` says the training mask is 0/1 valued: then every member of a tied granule is multiplied
by it (LEAP's gradient to S sums over q/k/v/out). A real-valued owner scales only the slices that
carry its value (the out projection's columns of a head, the down projection's column of a neuron)
and gates the others by its support (``mask != 0``), so a head's output is scaled once.

``FixedMask`` is the simplest owner: a mask set from outside (one-shot scores, least-squares scales).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MaskOwner(nn.Module):
    """Base of every owner: ``shape`` granule grid; ``count`` = weight elements governed."""

    binary: bool = True

    def __init__(self, shape: Sequence[int], key: str = "", device=None):
        super().__init__()
        self.grid_shape = tuple(int(s) for s in shape)
        self.key = key      # family FQN (tied) or weight name (per matrix)
        self.count = 0      # weight elements governed, summed over members (set by the carrier)

    @property
    def granules(self) -> int:
        n = 1
        for s in self.grid_shape:
            n *= s
        return n

    def mask(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        return (self.deterministic_mask() != 0).to(torch.float32)

    def deterministic_mask(self) -> torch.Tensor:
        return self.mask()

    def expected_density(self) -> torch.Tensor:
        return self.hard_mask().mean()

    def extra_repr(self) -> str:
        return f"key={self.key!r}, granules={self.grid_shape}, count={self.count}"


class FixedMask(MaskOwner):
    """A mask written from outside (``set``); real-valued unless every value is 0 or 1.

    ``values`` is a parameter (no gradient unless ``trainable``): a method can take gradients with
    respect to the mask itself (Fisher information of Kwon et al.) and fold any real values exactly.
    """

    def __init__(self, shape: Sequence[int], key: str = "", device=None, trainable: bool = False):
        super().__init__(shape, key, device)
        self.values = nn.Parameter(torch.ones(self.grid_shape, device=device), requires_grad=trainable)

    @property
    def binary(self) -> bool:  # type: ignore[override]
        v = self.values.detach()
        return bool(((v == 0) | (v == 1)).all())

    @torch.no_grad()
    def set(self, values: torch.Tensor) -> None:
        self.values.copy_(torch.as_tensor(values, dtype=self.values.dtype).reshape(self.grid_shape))

    def mask(self) -> torch.Tensor:
        return self.values

    def deterministic_mask(self) -> torch.Tensor:
        return self.values
