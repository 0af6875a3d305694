"""Image classification: ``config.py`` (``ImageClassificationConfig``) ; ``handler.py`` (``ImageClassification``:
the task's hooks) -> ``data.py`` (a folder of class sub-folders, a .jsonl of image paths and labels, or the
8x8 digits shipped in the scikit-learn wheel) -> ``preprocess.py`` (pixels through the model folder's image
processor, else resized and normalised from the config) ; the loss is sequence classification's
(``ClassificationLoss``), the metric top-1 accuracy. Only the config loads on import (no torch)."""
from leap_fx.tasks.image_classification.config import ImageClassificationConfig

__all__ = ["ImageClassificationConfig"]
