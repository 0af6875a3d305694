"""Logit distillation (LEAP Eq. 8): ``(1 - alpha) CE + alpha KL(softmax(t/tau) || softmax(s/tau)) tau^2``.

An objective is a module: it declares what it needs captured besides the logits (``captures``, names of
``taps.TAPS``), and its parameters (a layer map, a projection) are trained with the weights and saved in
checkpoints (``state_dict``). Without a teacher the task is plain CE.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from leap_fx.objectives.outputs import Outputs
from leap_fx.objectives.task_loss import ClassificationLoss, TaskLoss, kl_divergence

__all__ = ["kd_loss", "LogitKD"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """``KL(softmax(t/tau) || softmax(s/tau)) tau^2``, averaged over the batch (Hinton et al.)."""
    return kl_divergence(student_logits, teacher_logits, temperature)


class LogitKD(nn.Module):
    """Eq. 8 on the task's logits: ``(1 - alpha) L_task + alpha KD``; ``{"task", "ce", "kd"}`` (``ce``: the
    task's own loss; ``kd`` 0 without a teacher). Needs nothing captured. An objective is a module: its
    parameters (a layer map, a projection) are trained with the weights and saved in checkpoints."""

    captures: frozenset = frozenset()

    def __init__(self, alpha: float = 0.9, temperature: float = 2.0, task: Optional[TaskLoss] = None):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha, self.temperature = alpha, temperature
        self.task = task if task is not None else ClassificationLoss()

    def forward(self, out: Outputs, teacher: Optional[Outputs], batch: dict) -> dict[str, torch.Tensor]:
        ce = self.task.loss(out.logits, batch)
        if teacher is None or self.alpha == 0.0:
            return {"task": ce, "ce": ce, "kd": torch.zeros((), device=ce.device)}
        kd = self.task.distill(out.logits, teacher.logits, batch, self.temperature)
        return {"task": (1.0 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd}
