"""The image-classification task's hooks (``SupervisedTask``), driven by the task job.

Input ``pixel_values [batch, channels, height, width]`` (float32, normalised as ``preprocess.py`` says);
output ``logits [batch, num_labels]``; metric: top-1 accuracy. ``model.onnx`` carries the label names and
the preprocessing (image size, channels, rescale factor, mean, std, resampling).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from leap_fx.objectives.task_loss import ClassificationLoss
from leap_fx.tasks.image_classification.config import ImageClassificationConfig
from leap_fx.tasks.image_classification.data import DIGITS, class_names, read_digits, read_images
from leap_fx.tasks.image_classification.preprocess import image_prep
from leap_fx.tasks.registry import register_task
from leap_fx.tasks.rows import Rows
from leap_fx.tasks.supervised import Split, SupervisedTask, TaskData

__all__ = ["ImageClassification", "top1"]


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest logit is the label's.

    >>> top1(np.array([[0.1, 2.0], [3.0, 1.0], [0.0, 1.0]]), np.array([1, 1, 1]))
    0.6666666666666666
    """
    return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())


@register_task(ImageClassificationConfig)
class ImageClassification(SupervisedTask):
    """Image -> class (module docstring)."""

    default_model_name = "none (pass --model)"

    def read_file(self, path: str, opts) -> Rows:
        return read_images(path, self.config.image_column, opts.label_column, opts.drop_invalid)

    def named_data(self, name: str, seed: int):
        return read_digits(seed) if name.lower() in DIGITS else None

    def label_names(self, rows: Rows) -> list[str]:
        names = class_names(rows)
        if len(names) < 2:
            raise ValueError(f"{rows.source.get('path')}: one class {names}: a classifier needs two or more")
        return names

    def labels_of(self, row) -> set:
        return {row["label"]}

    def model_folder(self, model: Optional[str]) -> str:
        if model is None:
            raise ValueError("--task image-classification needs --model DIR (an image classifier folder: ViT, DeiT, "
                             "Swin, ...; no image model ships in a wheel here)")
        return model

    def load_processor(self, folder: str, model):
        return image_prep(folder, model.config)

    def encode(self, data: TaskData, prep, opts, model_config=None) -> tuple[dict[str, Split], dict]:
        index = {n: i for i, n in enumerate(data.label_names)}
        splits = {}
        for name, rows in data.splits.items():
            tensors = {"pixel_values": prep.pixels(rows.rows),
                       "labels": torch.tensor([index[r["label"]] for r in rows.rows], dtype=torch.long)}
            splits[name] = Split(name, tensors, rows.rows)
        return splits, prep.settings()

    def task_loss(self) -> ClassificationLoss:
        return ClassificationLoss()

    def scores(self, outputs: dict, split: Split) -> dict:
        labels = split.tensors["labels"].numpy()
        counts = np.bincount(labels, minlength=int(labels.max()) + 1) if len(labels) else np.zeros(1)
        return {"accuracy": top1(outputs["logits"], labels), "majority": float(counts.max() / max(1, len(labels)))}

    def metadata(self, report: dict, settings: dict) -> dict:
        return {**super().metadata(report, settings),
                "output": "logits [batch, num_labels]: argmax indexes label_names; softmax gives probabilities"}
