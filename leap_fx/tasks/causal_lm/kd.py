"""Next-token losses for causal LMs: the LM loss and a memory-aware distillation from a teacher.

Both take model outputs (an HF output with ``logits``, a dict, or the logits tensor) and the batch
(``input_ids``; optional ``attention_mask`` and ``labels``, -100 = ignored) and return a scalar.
Position ``t`` predicts token ``t + 1``; a position counts when its target is a real token.

``lm_loss``: mean cross-entropy of the next token (HF's ``loss`` for ``labels = input_ids``).

``kd_loss`` (Hinton et al.: ``T^2 KL(p_T || q_T)``, softened by temperature ``T``): the full-vocabulary
KL needs the teacher's ``[batch, seq, 49152]`` logits for every training block, 196 KB per token in
float32 (25 GB for 500 blocks of 256 tokens): too much to cache and a second big tensor in memory at
every step. We keep the teacher's **top-k** log-probabilities (k = 64 by default, computed from the
full softmax, so they are exact) plus the **rest mass** ``1 - sum(top-k)``, 0.8 KB per token, which can
be computed once and cached, and take the KL between the two (k + 1)-bin distributions: the tokens the
teacher ranks highest, and "everything else" (the student's rest mass is ``1 - sum`` of its own
probabilities on the teacher's top-k tokens, from a log-sum-exp of the full logits, numerically
stable). By the data-processing inequality this lower-bounds the full KL, reaches it as the rest mass
goes to 0 (SmolLM2's top 64 tokens hold most of the mass on text), and, unlike plain top-k
renormalisation, still penalises a student that puts mass outside the teacher's top-k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

TOP_K = 64
__all__ = ["TOP_K", "TeacherTopK", "kd_loss", "lm_loss", "logits_of", "teacher_topk"]


def logits_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out["logits"]


def next_token_targets(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(next-token targets [B, S-1], weight [B, S-1])``."""
    labels = batch.get("labels", batch["input_ids"])
    target = labels[:, 1:]
    keep = target != -100
    mask = batch.get("attention_mask")
    if mask is not None:
        keep = keep & mask[:, 1:].bool() & mask[:, :-1].bool()
    return target.clamp(min=0), keep


def lm_loss(out: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the counted positions."""
    logits = logits_of(out)[:, :-1].float()
    target, keep = next_token_targets(batch)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return (ce * keep.reshape(-1)).sum() / keep.sum().clamp(min=1)


@dataclass
class TeacherTopK:
    """The teacher's ``k`` most likely next tokens per position: log-probabilities (at ``temperature``) and ids."""

    logprobs: torch.Tensor   # [B, S, k] float
    indices: torch.Tensor    # [B, S, k] long
    temperature: float = 1.0

    def to(self, device) -> "TeacherTopK":
        return TeacherTopK(self.logprobs.to(device), self.indices.to(device), self.temperature)


@torch.no_grad()
def teacher_topk(out: Any, k: int = TOP_K, temperature: float = 1.0) -> TeacherTopK:
    """The teacher's top-``k`` log-probabilities from its full softmax at ``temperature``."""
    logp = F.log_softmax(logits_of(out).float() / temperature, dim=-1)
    values, idx = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return TeacherTopK(values, idx, temperature)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def kd_loss(out: Any, teacher: TeacherTopK, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``T^2 KL(teacher || student)`` over the teacher's top-k tokens plus the rest mass (module doc)."""
    t = teacher.temperature
    logits = logits_of(out)[:, :-1].float() / t
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    p_log = teacher.logprobs[:, :-1].float()
    q_log = logits.gather(-1, teacher.indices[:, :-1]) - log_z
    p_rest = _log1mexp(torch.logsumexp(p_log, dim=-1))
    q_rest = _log1mexp(torch.logsumexp(q_log, dim=-1))
    kl = (p_log.exp() * (p_log - q_log)).sum(-1) + p_rest.exp() * (p_rest - q_rest)
    _, keep = next_token_targets(batch)
    return t * t * (kl * keep).sum() / keep.sum().clamp(min=1)
