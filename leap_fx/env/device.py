"""The device a job runs on: ``--device auto|cpu|cuda`` -> a ``torch.device``.

``auto`` takes CUDA when torch sees a GPU, else the CPU. ``cuda`` without a GPU is refused with the
reason (a CPU-only torch build, or no device visible), never silently run on the CPU.
"""
from __future__ import annotations

import torch

__all__ = ["choose_device"]


def choose_device(name: str = "auto") -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={name!r}: use auto, cpu or cuda")
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"device='cuda' but {why}: use device='cpu' (or 'auto')")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu")
