"""Pruning methods, one module each, registered by their config type (``registry.py``).

``base.py`` is the protocol (``TrainedMethod`` / ``OneShotMethod``); every other module here is a
method and registers itself on import: this package imports them all, so the registry is complete
whenever ``leap_fx.methods`` is imported. Adding a method = adding a module here (and its tests).
"""
import importlib
import pkgutil

from leap_fx.methods.base import LossTerms, Method, OneShotMethod, TrainedMethod
from leap_fx.methods.registry import build, config_class, config_from, handler, methods, register

_INFRA = {"base", "registry"}
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _INFRA and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["LossTerms", "Method", "OneShotMethod", "TrainedMethod", "build", "config_class", "config_from",
           "handler", "methods", "register"]
