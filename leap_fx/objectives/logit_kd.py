"""Logit distillation (LEAP Eq. 8): ``(1 - alpha) CE + alpha KL(softmax(t/tau) || softmax(s/tau)) tau^2``.

An objective is a module: it declares what it needs captured besides the logits (``captures``, names of
``taps.TAPS``), and its parameters (a layer map, a projection) are trained with the weights and saved in
checkpoints (``state_dict``). Without a teacher the task is plain CE.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from leap_fx.objectives.outputs import Outputs

__all__ = ["kd_loss", "objective", "LogitKD"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """``KL(softmax(t/tau) || softmax(s/tau)) tau^2``, averaged over the batch (Hinton et al.)."""
    if temperature <= 0:
        raise ValueError(f"kd temperature must be > 0, got {temperature}")
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def objective(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits=None,
              alpha: float = 0.9, temperature: float = 2.0) -> dict[str, torch.Tensor]:
    """Task part of Eq. 8: ``(1 - alpha) CE + alpha KD``; ``{"task", "ce", "kd"}`` (kd 0 without a teacher)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ce = F.cross_entropy(student_logits, labels)
    if teacher_logits is None or alpha == 0.0:
        return {"task": ce, "ce": ce, "kd": torch.zeros((), device=ce.device)}
    kd = kd_loss(student_logits, teacher_logits, temperature)
    return {"task": (1.0 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}


class LogitKD(nn.Module):
    """Eq. 8 on the logits; needs nothing captured. An objective is a module: its parameters (a layer
    map, a projection) are trained with the weights and saved in checkpoints (``state_dict``)."""

    captures: frozenset = frozenset()

    def __init__(self, alpha: float = 0.9, temperature: float = 2.0):
        super().__init__()
        self.alpha, self.temperature = alpha, temperature

    def forward(self, out: Outputs, teacher: Optional[Outputs], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        t = teacher.logits if teacher is not None else None
        return objective(out.logits, labels, t, self.alpha, self.temperature)
