"""Task losses: what a task's model outputs mean to an objective (the task term and the KD target).

Every objective of a method (logit KD, TinyBERT's, CoFi's layer matching) combines a *task term* and a
*distillation term* on the model's outputs. What those are depends on the task, not on the method, so
a task supplies a ``TaskLoss``:

- ``logits(output)``: the tensor distillation compares (a classifier's ``logits [B, C]``; a language
  model's ``logits [B, S, V]``; extractive QA's start and end logits stacked ``[B, S, 2]``);
- ``loss(logits, batch)``: the task's own loss, a batch mean (cross-entropy on ``labels``, next-token
  cross-entropy, span cross-entropy);
- ``distill(student, teacher, batch, tau)``: ``KL(softmax(t/tau) || softmax(s/tau)) tau^2`` over what the
  task predicts (Hinton et al.; LEAP Eq. 8), averaged over its prediction sites;
- ``summed(output, batch)``: the sum over the batch's examples of each example's loss (one-shot
  methods take per-example gradients of it: Kwon et al.'s Fisher information).

``ClassificationLoss`` is sequence classification's (one prediction per example, the job's first
task); other tasks add theirs (``leap_fx.tasks``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from leap_fx.objectives.outputs import logits_of

__all__ = ["TaskLoss", "ClassificationLoss", "kl_divergence", "check_class_labels"]


def kl_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                  weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``KL(softmax(t/tau) || softmax(s/tau)) tau^2`` over the last axis, averaged over the other axes
    (over the sites where ``weight`` is 1 when given: e.g. real tokens)."""
    if temperature <= 0:
        raise ValueError(f"kd temperature must be > 0, got {temperature}")
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.detach().float() / t, dim=-1)
    per_site = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    if weight is None:
        return per_site.mean() * t * t
    w = weight.to(per_site.dtype)
    return (per_site * w).sum() / w.sum().clamp_min(1.0) * t * t


def check_class_labels(labels: torch.Tensor, num_logits: int) -> None:
    """Raise ``ValueError`` unless every label is an integer class index in ``[0, num_logits)``."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}: map the label "
                         f"names to 0..{num_logits - 1}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_logits:
        raise ValueError(f"labels range over [{lo}, {hi}] but the model outputs {num_logits} logits: build "
                         f"the classifier with num_labels={max(hi + 1, num_logits)} or fix the labels")


class TaskLoss:
    """The protocol (module docstring); subclasses implement ``loss`` and may refine the others.
    ``check(logits, labels)``: the training data's labels fit the model's outputs (once, before training)."""

    name = "task"

    def check(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        return None

    def logits(self, output) -> torch.Tensor:
        return logits_of(output)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def distill(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict, temperature: float) -> torch.Tensor:
        return kl_divergence(student, teacher, temperature)

    def summed(self, output, batch: dict) -> torch.Tensor:
        raise NotImplementedError


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision logits are widened; float64 stays)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class ClassificationLoss(TaskLoss):
    """Sequence classification: cross-entropy of ``logits [B, C]`` against ``labels [B]``."""

    name = "classification"

    def check(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        check_class_labels(labels, logits.shape[-1])

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if "labels" not in batch:
            raise ValueError("the batch has no 'labels': a classification loss needs them")
        return F.cross_entropy(logits, batch["labels"])

    def summed(self, output, batch: dict) -> torch.Tensor:
        """Cross-entropy summed over the examples for class labels; squared error for real targets."""
        if "labels" not in batch:
            raise ValueError("the batches have no 'labels': the task loss needs them (pass a loss of your own, "
                             "loss(outputs, batch) -> summed loss, for an unlabelled model)")
        labels, out = batch["labels"], _wide(self.logits(output))
        if labels.is_floating_point():
            return F.mse_loss(out.reshape(labels.shape), labels.to(out.dtype), reduction="sum")
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1), reduction="sum")
