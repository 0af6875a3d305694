"""Kwon et al., *A Fast Post-Training Pruning Framework for Transformers*: ``config.py`` (``KwonConfig``) ;
``handler.py`` (``Kwon``: the four steps) -> ``batches.py`` (calibration batches) -> ``fisher.py`` (step 1:
mask gradients, ``capture.py`` / ``replay.py``) -> ``search.py`` (steps 2-3) -> ``tune.py`` (step 4)."""
from leap_fx.methods.kwon.config import KwonConfig

__all__ = ["KwonConfig"]
