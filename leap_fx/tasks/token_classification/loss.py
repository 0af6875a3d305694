"""The token-classification ``TaskLoss``: per-token logits ``[B, S, C]`` against per-token ``labels [B, S]``
(-100: not scored: special tokens, padding, every sub-word after a word's first).

- ``loss``: mean cross-entropy over the labelled tokens;
- ``distill``: ``T^2 KL(teacher || student)`` per token, averaged over the real tokens (attention mask):
  every sub-word carries the teacher's distribution, not only the labelled ones;
- ``summed``: per example, the mean cross-entropy over its labelled tokens, summed over the examples
  (Kwon et al.'s Fisher takes per-example gradients of it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from leap_fx.objectives.task_loss import TaskLoss, kl_divergence

__all__ = ["TokenClassificationLoss", "IGNORE"]

IGNORE = -100


class TokenClassificationLoss(TaskLoss):
    name = "token-classification"

    def check(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if labels.dtype.is_floating_point or labels.dim() != 2:
            raise ValueError(f"token labels must be integer [batch, sequence] with {IGNORE} for unscored tokens, "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        real = labels[labels != IGNORE]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= logits.shape[-1]):
            raise ValueError(f"token labels range over [{int(real.min())}, {int(real.max())}] but the model "
                             f"outputs {logits.shape[-1]} logits per token: build it with num_labels="
                             f"{max(int(real.max()) + 1, logits.shape[-1])}")

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labels = batch["labels"]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE)

    def distill(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict, temperature: float) -> torch.Tensor:
        mask = batch.get("attention_mask")
        weight = mask if mask is not None and mask.shape == student.shape[:2] else None
        return kl_divergence(student, teacher, temperature, weight)

    def summed(self, output, batch: dict) -> torch.Tensor:
        logits, labels = self.logits(output).float(), batch["labels"]
        ce = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")  # [B, S]
        keep = (labels != IGNORE).to(ce.dtype)
        return ((ce * keep).sum(1) / keep.sum(1).clamp(min=1)).sum()
