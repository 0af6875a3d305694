"""Activations the feed-forward matcher recognises (numerically) and strip evaluates on constants."""
from __future__ import annotations

from typing import Callable

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
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function recorded in a FeedForwardFamily."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)} "
                         "(add it to passes.analyze.activations.ACTIVATIONS)")
    return ACTIVATIONS[name]
