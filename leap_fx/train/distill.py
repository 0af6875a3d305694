"""Knowledge-distillation loss and the LEAP training objective (paper Eq. 8)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 2.0) -> torch.Tensor:
    """``KL(softmax(t/τ) || softmax(s/τ)) · τ²``, averaged over the batch (Hinton et al.)."""
    if temperature <= 0:
        raise ValueError(f"kd temperature must be > 0, got {temperature}")
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def objective(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits=None,
              alpha: float = 0.9, temperature: float = 2.0) -> dict[str, torch.Tensor]:
    """Task part of Eq. 8: ``(1 - α)·CE + α·KD``; without a teacher it is plain CE.

    Returns ``{"task", "ce", "kd"}`` (``kd`` is 0 without a teacher). Add ``λ·L_reg`` separately.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ce = F.cross_entropy(student_logits, labels)
    if teacher_logits is None or alpha == 0.0:
        return {"task": ce, "ce": ce, "kd": torch.zeros((), device=ce.device)}
    kd = kd_loss(student_logits, teacher_logits, temperature)
    return {"task": (1.0 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}
