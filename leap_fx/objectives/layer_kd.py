"""Layer-wise distillation: ``LayerKD`` adds ``beta * mean_l MSE(h_s[map[l]] @ W_l, h_t[l])`` over mapped
blocks to logit KD (hidden states; a learnable linear map ``W_l`` when the widths differ), as TinyBERT
and CoFi do."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from leap_fx.objectives.logit_kd import LogitKD
from leap_fx.objectives.task_loss import TaskLoss

__all__ = ["LayerKD"]


class LayerKD(LogitKD):
    """Logit KD plus hidden-state MSE between mapped layers: ``layer_map[i]`` = the student block matched
    to teacher block ``i`` (default: uniform, as TinyBERT). ``beta`` weighs the layer term."""

    captures = frozenset({"hidden"})

    def __init__(self, alpha: float = 0.9, temperature: float = 2.0, beta: float = 1.0,
                 layer_map: Optional[Sequence[int]] = None, widths: Optional[tuple[int, int]] = None,
                 task: Optional[TaskLoss] = None):
        super().__init__(alpha, temperature, task)
        self.beta, self.layer_map = beta, None if layer_map is None else list(layer_map)
        self.proj = None if widths is None or widths[0] == widths[1] else nn.Linear(widths[0], widths[1])

    def pairs(self, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
        """(student block, teacher block) pairs: the map, or uniform when depths differ."""
        if self.layer_map is not None:
            return [(s, t) for t, s in enumerate(self.layer_map) if s is not None]
        return [(math.ceil((t + 1) * n_student / n_teacher) - 1, t) for t in range(n_teacher)]

    def forward(self, out, teacher, batch):
        terms = super().forward(out, teacher, batch)
        if teacher is None or not teacher.hidden or not out.hidden:
            return terms
        losses = []
        for s, t in self.pairs(len(out.hidden), len(teacher.hidden)):
            h = out.hidden[s] if self.proj is None else self.proj(out.hidden[s])
            losses.append(F.mse_loss(h, teacher.hidden[t].detach()))
        hidden = torch.stack(losses).mean()
        terms["hidden"] = hidden
        terms["task"] = terms["task"] + self.beta * hidden
        return terms
