"""Token classification (plain data): words with one tag each (BIO / IOB2 / IOBES entity tags, or any
per-word label), per-token logits, entity-level F1."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.spec.fields import option
from leap_fx.spec.task import TaskConfig

__all__ = ["TokenClassificationConfig"]


@dataclass
class TokenClassificationConfig(TaskConfig):
    """Rows of words and their tags: ``.jsonl`` (a list of words and a list of tags per line) or CoNLL-style
    text (a word and its tag per line, the tag in the last column; a blank line ends a sentence)."""

    task: ClassVar[str] = "token-classification"
    handler: ClassVar[str] = "leap_fx.tasks.token_classification.handler:TokenClassification"
    auto_class: ClassVar[str] = "AutoModelForTokenClassification"
    architectures: ClassVar[tuple[str, ...]] = ("ForTokenClassification",)
    metric: ClassVar[str] = "f1"
    default_data: ClassVar[Optional[str]] = "wnut16"  # tasks/token_classification/data.py WNUT16

    tokens_column: str = option("tokens", ".jsonl: the column holding each row's list of words")
    tags_column: str = option("tags", ".jsonl: the column holding each row's list of tags (one per word)")

    def __post_init__(self):
        for name in ("tokens_column", "tags_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r} must name a column")
        if self.tokens_column == self.tags_column:
            raise ValueError(f"tokens_column and tags_column are both {self.tokens_column!r}: name two columns")
