"""SparseBERT (Xu et al. 2021): ``config.py`` (``SparseBertConfig``) ; ``handler.py`` (knowledge-aware
pruning of the pretrained model, TinyBERT distillation)."""
from leap_fx.methods.sparsebert.config import SparseBertConfig

__all__ = ["SparseBertConfig"]
