"""Pruning methods: one folder each, a config (plain data, ``config.py``) and a handler (``handler.py``).

The built-in methods, listed here explicitly (their configs only: importing this package loads no
torch; a handler loads when a method is built, ``registry.build``):

    leap        LEAP, learnable Top-K thresholds (Yao, Wu et al.)           trained
    kwon        Kwon et al.'s post-training pruning                         one-shot
    cofi        CoFi, hard-concrete gates + Lagrangian (Xia et al.)          trained
    sparsebert  knowledge-aware sparse pruning (Xu et al.)                   trained
    magnitude   gradual magnitude pruning (Zhu & Gupta)                     trained
    movement    movement pruning (Sanh et al.)                              trained
    l2-oneshot  heads / neurons by weight norm                              one-shot
    random      heads / neurons at random (the baseline to beat)            one-shot
    dense       dense fine-tuning (the teacher; prunes nothing)             trained

``base.py`` is the handler protocol (``Method``, ``TrainedMethod``, ``OneShotMethod``, ``LossTerms``),
``registry.py`` the one table, ``request.py`` turns a ``PruneOptions`` into the method's config.
Adding a method = a folder with ``config.py`` + ``handler.py`` (``@register(Config)``) and a line here.
"""
from importlib import import_module

from leap_fx.methods.cofi.config import CofiConfig
from leap_fx.methods.dense.config import DenseConfig
from leap_fx.methods.kwon.config import KwonConfig
from leap_fx.methods.l2_oneshot.config import L2OneShotConfig
from leap_fx.methods.leap.config import LeapConfig
from leap_fx.methods.magnitude.config import MagnitudeConfig
from leap_fx.methods.movement.config import MovementConfig
from leap_fx.methods.random.config import RandomConfig
from leap_fx.methods.registry import (
    add_config,
    build,
    config_class,
    config_from,
    config_names,
    handler_class,
    register,
)
from leap_fx.methods.sparsebert.config import SparseBertConfig

BUILTIN = (LeapConfig, KwonConfig, CofiConfig, SparseBertConfig, MagnitudeConfig, MovementConfig, L2OneShotConfig,
           RandomConfig, DenseConfig)
for _config in BUILTIN:
    add_config(_config)

_LAZY = {"Method": "leap_fx.methods.base", "TrainedMethod": "leap_fx.methods.base",
         "OneShotMethod": "leap_fx.methods.base", "LossTerms": "leap_fx.methods.base"}  # torch: on first use

__all__ = ["BUILTIN", "CofiConfig", "DenseConfig", "KwonConfig", "L2OneShotConfig", "LeapConfig", "MagnitudeConfig",
           "MovementConfig", "RandomConfig", "SparseBertConfig", "add_config", "build", "config_class", "config_from", "config_names",
           "handler_class", "register", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'leap_fx.methods' has no attribute {name!r}")
