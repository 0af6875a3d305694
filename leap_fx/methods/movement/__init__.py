"""Movement pruning (Sanh et al. 2020): ``config.py`` (``MovementConfig``) ; ``handler.py``."""
from leap_fx.methods.movement.config import MovementConfig

__all__ = ["MovementConfig"]
