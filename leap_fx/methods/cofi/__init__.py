"""CoFi (Xia et al., ACL 2022): ``config.py`` (``CofiConfig``) ; ``handler.py`` (``Cofi``: hard-concrete
gates, Lagrangian target, matched layer distillation) -> ``gates.py`` (the gates and the expected size)."""
from leap_fx.methods.cofi.config import CofiConfig

__all__ = ["CofiConfig"]
