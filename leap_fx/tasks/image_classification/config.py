"""Image classification (plain data): pixels in, class logits out, top-1 accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.spec.fields import option
from leap_fx.spec.task import TaskConfig

__all__ = ["ImageClassificationConfig"]


@dataclass
class ImageClassificationConfig(TaskConfig):
    """Images with a label: a folder with one sub-folder of images per class, or a ``.jsonl`` with an image
    path (relative to the file) and a label per line (the label column is ``--label-column``)."""

    task: ClassVar[str] = "image-classification"
    handler: ClassVar[str] = "leap_fx.tasks.image_classification.handler:ImageClassification"
    auto_class: ClassVar[str] = "AutoModelForImageClassification"
    architectures: ClassVar[tuple[str, ...]] = ("ForImageClassification",)
    metric: ClassVar[str] = "accuracy"
    default_data: ClassVar[Optional[str]] = "digits"  # tasks/image_classification/data.py DIGITS

    image_column: str = option("image", ".jsonl: the column holding each row's image file (relative to the file)")

    def __post_init__(self):
        if not isinstance(self.image_column, str) or not self.image_column:
            raise ValueError(f"image_column={self.image_column!r} must name a column")
