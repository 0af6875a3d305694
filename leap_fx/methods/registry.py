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

from typing import Any

from leap_fx.spec.method import MethodConfig
from leap_fx.spec.registry import Registry

__all__ = ["add_config", "register", "config_names", "config_class", "handler_class", "build", "config_from",
           "prepare_masks"]

REGISTRY = Registry("method", MethodConfig)
_CONFIGS, _HANDLERS = REGISTRY.configs, REGISTRY.handlers  # method name -> config class; config class -> handler


def add_config(config_cls: type) -> type:
    """Make ``config_cls`` known by its ``method`` name (a name taken by another config is refused)."""
    return REGISTRY.add(config_cls)


def register(config_cls: type):
    """Class decorator: the handler implements the method whose config is ``config_cls``."""
    return REGISTRY.register(config_cls)


def config_names(prunes_only: bool = True) -> list[str]:
    """Every registered method name, sorted (``prunes_only``: without the dense teacher)."""
    return sorted(n for n, c in _CONFIGS.items() if c.prunes or not prunes_only)


def config_class(name: str) -> type:
    return REGISTRY.config_class(name, config_names())


def handler_class(config_cls: type) -> type:
    """The handler of ``config_cls`` (or of its nearest base with one), importing it if needed."""
    return REGISTRY.handler(config_cls)


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
    """``leap_fx.masks.lifecycle`` with the mask owner of ``config``'s handler (``owner`` overrides it):
    the masks alone, without the method's own preparation (LEAP's regulariser, CoFi's gates)."""
    from leap_fx.masks.lifecycle import prepare  # torch: loaded when masks are prepared
    return prepare(model, config, plan, owner=owner or build(config).make_owner)
