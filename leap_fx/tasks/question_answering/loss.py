"""The extractive-QA ``TaskLoss``: the logits are start and end stacked, ``[B, S, 2]``; ``labels [B, 2]``
hold the answer's start and end token positions.

- ``logits``: ``stack(start_logits, end_logits)`` of an HF output (a tensor output is taken as stacked);
- ``loss``: ``(CE(start) + CE(end)) / 2`` over the sequence axis (HF's QA loss);
- ``distill``: ``T^2 KL(teacher || student)`` of the start and of the end distribution over the sequence,
  averaged over both and the batch;
- ``summed``: per example ``(CE(start) + CE(end)) / 2``, summed over the examples (Kwon's Fisher).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from leap_fx.objectives.task_loss import TaskLoss, kl_divergence

__all__ = ["SpanLoss", "span_logits"]


def span_logits(output) -> torch.Tensor:
    """``[B, S, 2]``: start and end logits of an HF QA output (a tensor is returned as is)."""
    if isinstance(output, torch.Tensor):
        return output
    start, end = getattr(output, "start_logits", None), getattr(output, "end_logits", None)
    if start is None or end is None:
        raise ValueError(f"the model's output ({type(output).__name__}) has no start_logits / end_logits: is it "
                         f"a question-answering model?")
    return torch.stack([start, end], -1)


class SpanLoss(TaskLoss):
    name = "span"

    def check(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if labels.dtype.is_floating_point or labels.dim() != 2 or labels.shape[1] != 2 or int(labels.min()) < 0:
            raise ValueError(f"QA labels must be [batch, 2] non-negative token positions (start, end), got "
                             f"{labels.dtype} {tuple(labels.shape)}")

    def logits(self, output) -> torch.Tensor:
        return span_logits(output)

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
        s = logits.shape[1]
        pos = labels.clamp(0, s - 1)
        start = F.cross_entropy(logits[..., 0].float(), pos[:, 0], reduction=reduction)
        end = F.cross_entropy(logits[..., 1].float(), pos[:, 1], reduction=reduction)
        return (start + end) / 2

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return self._ce(logits, batch["labels"], "mean")

    def distill(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict, temperature: float) -> torch.Tensor:
        return kl_divergence(student.transpose(1, 2), teacher.transpose(1, 2), temperature)

    def summed(self, output, batch: dict) -> torch.Tensor:
        return self._ce(self.logits(output), batch["labels"], "none").sum()
