"""One registry: method name -> config class (light, eager), config class -> handler (lazy).

As torchao maps a config dataclass to its handler and optimum names classes by string until used:
``leap_fx.methods`` lists the built-in configs explicitly (``__init__.py``: plain data, no torch), and
each config names its handler as ``"module:Class"`` (``MethodConfig.handler``), imported by ``build``.
A handler class registers itself for its config with ``@register(Config)`` (built-ins do, plugins do
the same); ``register`` also adds a config the registry has not seen, so a method defined at run time
is a config dataclass plus a decorated handler::

    @dataclass
    class MyConfig(MaskSpec):
        method: ClassVar[str] = "mine"

    @register(MyConfig)
    class Mine(OneShotMethod):
        def make_owner(self, shape, key, device=None): return FixedMask(shape, key, device)
        def calibrate(self, model, batches, teacher=None): ...

``build(config)`` makes the handler of a config; ``config_from(name, **options)`` makes and validates
a config from plain options (CLI / JSON).
"""
from __future__ import annotations

import importlib
from typing import Any

from leap_fx.spec.method import MethodConfig

__all__ = ["add_config", "register", "config_names", "config_class", "handler_class", "build", "config_from",
           "prepare_masks"]

_CONFIGS: dict[str, type] = {}    # method name -> config class
_HANDLERS: dict[type, type] = {}  # config class -> handler class (registered on import of the handler)


def add_config(config_cls: type) -> type:
    """Make ``config_cls`` known by its ``method`` name (a name taken by another config is refused)."""
    name = config_cls.__dict__.get("method") or getattr(config_cls, "method", "")
    if not isinstance(config_cls, type) or not issubclass(config_cls, MethodConfig) or not name:
        raise TypeError(f"{getattr(config_cls, '__name__', config_cls)} must subclass leap_fx.spec.MethodConfig "
                        f"and name its method: method: ClassVar[str] = '<name>'")
    other = _CONFIGS.get(name)
    if other is not None and other is not config_cls:
        raise ValueError(f"method name {name!r} is taken by {other.__name__}")
    _CONFIGS[name] = config_cls
    return config_cls


def register(config_cls: type):
    """Class decorator: the handler implements the method whose config is ``config_cls``."""
    add_config(config_cls)

    def deco(handler: type) -> type:
        handler.name = config_cls.method
        handler.config_class = config_cls
        _HANDLERS[config_cls] = handler
        return handler
    return deco


def config_names(prunes_only: bool = True) -> list[str]:
    """Every registered method name, sorted (``prunes_only``: without the dense teacher)."""
    return sorted(n for n, c in _CONFIGS.items() if c.prunes or not prunes_only)


def config_class(name: str) -> type:
    if name not in _CONFIGS:
        raise ValueError(f"unknown method {name!r}: use one of {config_names()}")
    return _CONFIGS[name]


def handler_class(config_cls: type) -> type:
    """The handler of ``config_cls`` (or of its nearest base with one), importing it if needed."""
    for cls in config_cls.__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
        ref = cls.__dict__.get("handler")
        if isinstance(ref, str) and ref:
            module, _, attr = ref.partition(":")
            importlib.import_module(module)  # handlers import torch: loaded when a method is built
            if cls not in _HANDLERS:
                raise TypeError(f"{module}.{attr} does not register itself for {cls.__name__} "
                                f"(decorate it with @register({cls.__name__}))")
            return _HANDLERS[cls]
    raise TypeError(f"no method is registered for {config_cls.__name__}; registered: {config_names(False)}")


def build(config: Any, total_steps: int = 1, train_config=None, task_loss=None):
    """The handler for ``config`` (a registered config instance); ``total_steps``: the run's optimiser
    steps; ``train_config``: the loop's settings; ``task_loss``: the task's loss and KD target."""
    if not isinstance(config, MethodConfig):
        raise TypeError(f"build needs a method config (e.g. LeapConfig(target='flops:0.5')), got "
                        f"{type(config).__name__}")
    return handler_class(type(config))(config, total_steps, train_config, task_loss)


def config_from(name: str, **options) -> Any:
    """A validated config of method ``name`` from plain values (unknown / mistyped keys refused)."""
    return config_class(name).from_dict(options)


def prepare_masks(model, config, plan=None, owner=None):
    """``leap_fx.masks.prepare`` with the mask owner of ``config``'s handler (``owner`` overrides it):
    the masks alone, without the method's own preparation (LEAP's regulariser, CoFi's gates)."""
    from leap_fx.masks.prepare import prepare  # torch: loaded when masks are prepared
    return prepare(model, config, plan, owner=owner or build(config).make_owner)
