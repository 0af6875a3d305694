"""Sequence classification: ``config.py`` (``SequenceClassificationConfig``) ; ``handler.py``."""
from leap_fx.tasks.sequence_classification.config import SequenceClassificationConfig

__all__ = ["SequenceClassificationConfig"]
