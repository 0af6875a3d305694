"""One-shot structured pruning by weight norm: ``config.py`` (``L2OneShotConfig``) ; ``handler.py``."""
from leap_fx.methods.l2_oneshot.config import L2OneShotConfig

__all__ = ["L2OneShotConfig"]
