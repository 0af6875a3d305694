"""Gradual magnitude pruning (Zhu & Gupta 2017): ``config.py`` (``MagnitudeConfig``) ; ``handler.py``."""
from leap_fx.methods.magnitude.config import MagnitudeConfig

__all__ = ["MagnitudeConfig"]
