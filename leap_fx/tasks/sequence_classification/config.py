"""Sequence classification (single sentences or pairs): the job's first task (plain data)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from leap_fx.spec.task import TaskConfig

__all__ = ["SequenceClassificationConfig"]


@dataclass
class SequenceClassificationConfig(TaskConfig):
    """Texts (and text pairs) with a label column; metric: accuracy. The columns are ``PruneOptions``'
    (``text_column``, ``text_pair_column``, ``label_column``): every text task reads them."""

    task: ClassVar[str] = "sequence-classification"
    handler: ClassVar[str] = "leap_fx.tasks.sequence_classification.handler:SequenceClassification"
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"
    architectures: ClassVar[tuple[str, ...]] = ("ForSequenceClassification",)
    metric: ClassVar[str] = "accuracy"
