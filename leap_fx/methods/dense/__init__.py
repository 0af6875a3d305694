"""Dense fine-tuning (the teacher): ``config.py`` (``DenseConfig``) ; ``handler.py``."""
from leap_fx.methods.dense.config import DenseConfig

__all__ = ["DenseConfig"]
