"""Random structured pruning (the baseline): ``config.py`` (``RandomConfig``) ; ``handler.py``."""
from leap_fx.methods.random.config import RandomConfig

__all__ = ["RandomConfig"]
