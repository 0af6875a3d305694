"""Activations the feed-forward matcher recognises (numerically) and strip evaluates on constants.

``open:<ops>`` names the elementwise function of a feed-forward family the matcher could not name
(``ffn_open.py``): strip then removes neurons by their zero ``down`` columns only."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu2": lambda x: F.relu(x) ** 2,
    "mish": F.mish,
    "hardswish": F.hardswish,
}
OPEN = "open:"


def activation(name: str) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The activation function recorded in a FeedForwardFamily (None for an unnamed ``open:`` one)."""
    if name.startswith(OPEN):
        return None
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)} "
                         "(add it to passes.analyze.activations.ACTIVATIONS)")
    return ACTIVATIONS[name]
