"""TinyBERT-style layer-wise distillation (Jiao et al. 2020), the objective of SparseBERT (Xu et al. 2021).

For student layer ``m`` matched to teacher layer ``g(m)`` (uniform map: ``g(m) = ceil((m+1) N_t / N_s) - 1``,
the identity when the depths match; the embedding outputs are layer 0 of the hidden states)::

    L_attn = sum_m MSE(A^S_m, A^T_g(m))          A: pre-softmax attention scores q k^T / sqrt(d), all heads
    L_hidn = sum_m MSE(H^S_m, H^T_g(m))          H: embedding output and block outputs
    L_pred = KL(softmax(z^T / t) || softmax(z^S / t)) t^2                    (t = 1 in the paper)
    L      = (1 - alpha) CE(z^S, y) + alpha L_pred + w_h L_hidn + w_a L_attn

``L_pred`` is the paper's soft cross-entropy ``-sum p^T log p^S`` minus the teacher's entropy: the same
gradient, and zero when student and teacher agree. The paper trains on distillation alone (alpha = 1);
``alpha < 1`` mixes in the hard labels as every method of the loop does. Attention scores at masked
positions (the additive mask, ``<= MASKED``) are set to 0 in both, as the reference code does.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from leap_fx.objectives.logit_kd import LogitKD
from leap_fx.objectives.outputs import Outputs
from leap_fx.objectives.task_loss import TaskLoss

MASKED = -1e3  # scores at or below this carry an additive mask (-1e4 / finfo.min / -inf), not attention


def uniform_pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """``(student layer, teacher layer)``: every student layer ``m`` to teacher ``ceil((m+1) N_t/N_s) - 1``."""
    return [(s, math.ceil((s + 1) * n_teacher / n_student) - 1) for s in range(n_student)]


def _mse_sum(pairs, what: str, fix: str, masked: bool = False) -> torch.Tensor:
    """``sum MSE(student, teacher)`` over ``(label, student tensor, teacher tensor)``; ``masked``: zero the
    positions where the teacher's score is masked (``<= MASKED``) in both."""
    losses = []
    for label, a_s, a_t in pairs:
        a_t = a_t.detach()
        if a_s.shape != a_t.shape:
            raise ValueError(f"{what} of student and teacher ({label}) differ: {tuple(a_s.shape)} vs "
                             f"{tuple(a_t.shape)}; {fix}")
        if masked:
            keep, zero = a_t > MASKED, torch.zeros((), dtype=a_s.dtype, device=a_s.device)
            a_s, a_t = torch.where(keep, a_s, zero), torch.where(keep, a_t, zero)
        losses.append(F.mse_loss(a_s, a_t))
    return torch.stack(losses).sum()


def attention_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """``L_attn``: pre-softmax scores of the mapped layers, masked positions zeroed in both."""
    pairs = [(f"layers {s}/{t}", student[s], teacher[t]) for s, t in uniform_pairs(len(student), len(teacher))]
    return _mse_sum(pairs, "attention scores", "attention distillation needs the same heads (attention_weight=0 "
                    "turns it off)", masked=True)


def hidden_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               embeddings: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """``L_hidn``: block outputs of the mapped layers, plus the embedding outputs ``(student, teacher)``."""
    pairs = [(f"layers {s}/{t}", student[s], teacher[t]) for s, t in uniform_pairs(len(student), len(teacher))]
    if embeddings is not None:
        pairs.insert(0, ("embeddings", *embeddings))
    return _mse_sum(pairs, "hidden states", "hidden-state distillation needs the same width (hidden_weight=0 "
                    "turns it off)")


class TinyBertKD(LogitKD):
    """The module docstring's ``L``; logs ``ce``, ``kd``, ``hidden`` (L_hidn) and ``attention`` (L_attn)."""

    captures = frozenset({"embeddings", "hidden", "attention"})

    def __init__(self, alpha: float = 1.0, temperature: float = 1.0, hidden_weight: float = 1.0,
                 attention_weight: float = 1.0, task: Optional[TaskLoss] = None):
        super().__init__(alpha, temperature, task)
        if hidden_weight < 0 or attention_weight < 0:
            raise ValueError(f"hidden_weight={hidden_weight} and attention_weight={attention_weight} must be >= 0")
        self.hidden_weight, self.attention_weight = float(hidden_weight), float(attention_weight)

    def forward(self, out: Outputs, teacher: Optional[Outputs], batch: dict) -> dict[str, torch.Tensor]:
        terms = super().forward(out, teacher, batch)
        if teacher is None:
            return terms
        if out.hidden and teacher.hidden:
            emb = (out.embeddings[0], teacher.embeddings[0]) if out.embeddings and teacher.embeddings else None
            hidden = hidden_mse(out.hidden, teacher.hidden, emb)
            terms["hidden"] = hidden
            terms["task"] = terms["task"] + self.hidden_weight * hidden
        if out.attention and teacher.attention:
            attention = attention_mse(out.attention, teacher.attention)
            terms["attention"] = attention
            terms["task"] = terms["task"] + self.attention_weight * attention
        return terms
