"""Layer distillation with a learned map and re-chosen layer matches (CoFi Sec. 3.3, Eq. 7).

``MatchedLayerKD`` extends ``LayerKD``: a few teacher blocks ``T`` (default: 4 evenly spaced, the
reference's ``[2, 5, 8, 11]`` of 12) are each matched to the student block closest under one learned
linear map ``W`` (initialised to the identity, shared by all blocks)::

    m(i) = argmin_{j < m(i+1), j alive} MSE(W h_s[j], h_t[T_i])     (from the last teacher block down)
    L_layer = sum_i MSE(W h_s[m(i)], h_t[T_i])
    task = layer_weight * L_layer + pred_weight * KL(p_t || p_s) tau^2   (reference: 0.9 / 0.1)

The matching is re-chosen at every step (order-constrained: ``m`` increases with ``i``), so a pruned
student's layers find the teacher layers they still resemble; ``alive`` (a callable) can rule out
student blocks whose sub-layers are all gated off. Without a teacher the task is plain CE.

The map is the objective's own parameter: the method puts ``parameters()`` in an optimiser group, and
``state_dict`` / ``load_state_dict`` (JSON) carry it and the last match through checkpoints. Under
DDP its gradient is averaged over the ranks by a hook (it lives outside the DDP-wrapped model).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from leap_fx.objectives.layer_kd import LayerKD
from leap_fx.objectives.task_loss import TaskLoss


def spaced_layers(n: int, k: int = 4) -> list[int]:
    """``k`` teacher blocks evenly spaced over ``n``, the last included (12, 4 -> 2, 5, 8, 11)."""
    k = max(1, min(k, n))
    return sorted({math.ceil((i + 1) * n / k) - 1 for i in range(k)})


def ordered_match(losses: torch.Tensor, alive: Optional[Sequence[bool]] = None) -> list[int]:
    """Per teacher row of ``losses`` ``[T, S]``, the cheapest student column below the next row's match
    (rows matched from the last one down; a row with no column left keeps the previous match)."""
    n_t, n_s = losses.shape
    ok = [True] * n_s if alive is None else list(alive)
    match, bound = [0] * n_t, n_s
    for i in range(n_t - 1, -1, -1):
        order = torch.argsort(losses[i].detach()).tolist()
        pick = next((j for j in order if j < bound and ok[j]), None)
        match[i] = min(bound, n_s - 1) if pick is None else pick
        bound = match[i]
    return match


def _average_over_ranks(grad: torch.Tensor) -> torch.Tensor:
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        grad = grad.clone()
        tdist.all_reduce(grad)
        grad /= tdist.get_world_size()
    return grad


class MatchedLayerKD(LayerKD):
    """See the module docstring. ``build(width)`` creates the map once the hidden width is known."""

    def __init__(self, teacher_layers: int | Sequence[int] = 4, layer_weight: float = 0.9,
                 pred_weight: float = 0.1, temperature: float = 2.0,
                 alive: Optional[Callable[[], Sequence[bool]]] = None, task: Optional[TaskLoss] = None):
        super().__init__(alpha=1.0, temperature=temperature, beta=layer_weight, task=task)
        self.teacher_layers, self.pred_weight, self.alive = teacher_layers, float(pred_weight), alive
        self.map: Optional[nn.Linear] = None
        self.last_match: list[int] = []

    def build(self, width: int, device=None) -> "MatchedLayerKD":
        if self.map is None or self.map.in_features != width:
            self.map = nn.Linear(width, width, device=device)
            with torch.no_grad():
                self.map.weight.copy_(torch.eye(width, device=device))
                self.map.bias.zero_()
            for p in self.map.parameters():
                p.register_hook(_average_over_ranks)
        return self

    def chosen(self, n_teacher: int) -> list[int]:
        t = self.teacher_layers
        return spaced_layers(n_teacher, t) if isinstance(t, int) else [int(i) for i in t]

    def forward(self, out, teacher, batch):
        if teacher is None:
            ce = self.task.loss(out.logits, batch)
            return {"task": ce, "ce": ce}
        kd = self.task.distill(out.logits, teacher.logits, batch, self.temperature)
        terms = {"kd": kd, "task": self.pred_weight * kd}
        if not out.hidden or not teacher.hidden:
            return terms
        if self.map is None:
            self.build(out.hidden[0].shape[-1], out.hidden[0].device)
        mapped = [self.map(h) for h in out.hidden]
        targets = [teacher.hidden[i].detach() for i in self.chosen(len(teacher.hidden))]
        losses = torch.stack([torch.stack([F.mse_loss(m, t) for m in mapped]) for t in targets])
        alive = self.alive() if self.alive is not None else None
        self.last_match = ordered_match(losses, alive)
        layer = losses[torch.arange(len(targets)), torch.tensor(self.last_match)].sum()
        terms["hidden"] = layer
        terms["task"] = terms["task"] + self.beta * layer
        return terms
