"""Gradual pruning on the cubic schedule (LEAP Eq. 1): ``config.py`` (``ScheduleConfig``) ; ``handler.py``
(``Scheduled``, ``cubic_density``). A base for magnitude and movement pruning, not a method itself."""
from leap_fx.methods.scheduled.config import ScheduleConfig

__all__ = ["ScheduleConfig"]
