"""Input and numerical checks of the training loop: clear errors that name what is wrong and the fix.

- ``check_forward_inputs``: data / example-input names the model's ``forward`` does not accept
  (the error lists the accepted names; HF ``**kwargs: Unpack[TypedDict]`` counts its keys).
- ``non_finite_mask_params``: NaN/Inf in any trainable mask state (LEAP's S and sigma, ...) after a step;
  with the loss and gradient-norm checks in the loop, training stops at the first bad step and the
  last good checkpoint stays on disk.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import torch
from torch import nn

from passes.analyze.inputs import unknown_inputs


def check_forward_inputs(model: nn.Module, names: Iterable[str], what: str = "the data") -> None:
    """Raise ``ValueError`` if an input name is not a parameter of ``model.forward``."""
    bad, accepted = unknown_inputs(model, names)
    if bad:
        raise ValueError(f"{what} has input(s) {bad} that {type(model).__name__}.forward does not accept; "
                         f"it accepts {accepted}. Rename or drop those keys (labels go under 'labels').")


def non_finite_mask_params(owners: dict) -> list[str]:
    """Names (``<owner key>.<parameter>``) of mask-owner parameters holding NaN or Inf."""
    tensors = [(f"{key}.{name}", p) for key, o in owners.items() for name, p in o.named_parameters()]
    if not tensors:
        return []
    with torch.no_grad():
        flags = torch.stack([torch.isfinite(t).all() for _, t in tensors])
        if bool(flags.all()):
            return []
        return [name for (name, _), ok in zip(tensors, flags.tolist()) if not ok]


def last_good(ckpt: Optional[str]) -> str:
    return f"; last good checkpoint: {ckpt}" if ckpt and os.path.exists(ckpt) else "; no checkpoint was written"


def grad_norm(params) -> torch.Tensor:
    """Total L2 norm of the gradients (checked for NaN/Inf *before* clipping spreads them)."""
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
