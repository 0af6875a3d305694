"""The causal-LM ``TaskLoss``: next-token cross-entropy and the top-k distillation of ``kd.py``.

- ``loss``: mean next-token cross-entropy over the real tokens (HF's loss with ``labels = input_ids``);
- ``distill``: ``T^2 KL`` between the teacher's top-``k`` next-token distribution plus its rest mass and the
  student's probabilities on the same bins (``kd.kd_loss``; the teacher's top-k is taken from its full
  softmax at every step, so only ``[B, S, k]`` of it is kept per step);
- ``summed``: per block, the mean next-token NLL, summed over the blocks (Kwon et al.'s Fisher takes
  per-example gradients of it: one block is one example).
"""
from __future__ import annotations

import torch

from leap_fx.objectives.task_loss import TaskLoss
from leap_fx.tasks.causal_lm.kd import (
    TOP_K,
    kd_loss,
    lm_loss,
    next_token_targets,
    teacher_topk,
)

__all__ = ["NextTokenLoss"]


class NextTokenLoss(TaskLoss):
    name = "next-token"

    def __init__(self, top_k: int = TOP_K):
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        self.top_k = int(top_k)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return lm_loss(logits, batch)

    def distill(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict, temperature: float) -> torch.Tensor:
        return kd_loss(student, teacher_topk(teacher, self.top_k, temperature), batch)

    def summed(self, output, batch: dict) -> torch.Tensor:
        logits = self.logits(output)[:, :-1].float()
        target, keep = next_token_targets(batch)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # [B, S-1]
        per_block = (nll * keep).sum(1) / keep.sum(1).clamp(min=1)
        return per_block.sum()
