"""Extractive question answering (plain data): a question and a context in, the answer span's start and
end logits out; exact match and F1 as the SQuAD v1.1 script scores them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.spec.fields import option
from leap_fx.spec.task import TaskConfig

__all__ = ["QuestionAnsweringConfig"]


@dataclass
class QuestionAnsweringConfig(TaskConfig):
    """SQuAD-style rows: an id, a question, a context and its answers (text + character start)."""

    task: ClassVar[str] = "question-answering"
    handler: ClassVar[str] = "leap_fx.tasks.question_answering.handler:QuestionAnswering"
    auto_class: ClassVar[str] = "AutoModelForQuestionAnswering"
    architectures: ClassVar[tuple[str, ...]] = ("ForQuestionAnswering",)
    metric: ClassVar[str] = "f1"
    default_data: ClassVar[Optional[str]] = None  # no SQuAD-style data ships in a wheel here: --data is needed

    doc_stride: int = option(128, "tokens two consecutive windows of a long context share (HF's stride)")
    max_answer_length: int = option(30, "longest answer span considered, in tokens")
    n_best: int = option(20, "start and end candidates per window when the best span is chosen")
    default_max_length: int = option(384, "window length when --max-length is not given (capped by the model)")

    def __post_init__(self):
        for name in ("doc_stride", "max_answer_length", "n_best", "default_max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v} must be a positive int")
