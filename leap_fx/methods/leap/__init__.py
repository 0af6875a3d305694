"""LEAP: ``config.py`` (``LeapConfig``, plain data) ; ``handler.py`` (``Leap``: learnable Top-K thresholds,
Eq. 3-8) -> ``regularizer.py`` (``LeapRegularizer``: Eq. 5 and 7). The handler loads when built."""
from leap_fx.methods.leap.config import LeapConfig

__all__ = ["LeapConfig"]
