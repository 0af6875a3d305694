"""One registry: method config type -> handler (as torchao maps a config dataclass to its handler).

Every list of method names (CLI choices, validation, bench rows, report keys) reads this table;
``leap_fx.methods`` imports every module of the package, so a new method registers itself by
existing. ``build(config)`` makes the handler of a config; ``config_from(name, options)`` makes
and validates a config from plain options (CLI / JSON).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from leap_fx.methods.base import Method

_HANDLERS: dict[type, type[Method]] = {}


def register(config_cls: type):
    """Class decorator: ``handler`` implements the method whose config is ``config_cls``."""
    name = getattr(config_cls, "method", None)
    if not name:
        raise TypeError(f"{config_cls.__name__} needs a class attribute method = '<name>'")

    def deco(handler: type[Method]) -> type[Method]:
        clash = [c for c in _HANDLERS if c.method == name and c is not config_cls]
        if clash:
            raise ValueError(f"method name {name!r} is taken by {clash[0].__name__}")
        handler.name = name
        handler.config_class = config_cls
        _HANDLERS[config_cls] = handler
        return handler
    return deco


def methods() -> dict[str, type[Method]]:
    """name -> handler class, every registered method, sorted by name."""
    return {h.name: h for h in sorted(_HANDLERS.values(), key=lambda h: h.name)}


def handler(name: str) -> type[Method]:
    table = methods()
    if name not in table:
        raise ValueError(f"unknown method {name!r}: use one of {sorted(table)}")
    return table[name]


def config_class(name: str) -> type:
    return handler(name).config_class


def build(config: Any, total_steps: int = 1, train_config=None) -> Method:
    """The handler for ``config`` (a registered config instance)."""
    for cls in type(config).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls](config, total_steps, train_config)
    raise TypeError(f"no method is registered for {type(config).__name__}; registered: "
                    f"{sorted(c.__name__ for c in _HANDLERS)}")


def own_fields(config_cls: type, base: type) -> list[dataclasses.Field]:
    """The fields a method's config adds to ``base`` (its own options on the command line)."""
    common = {f.name for f in dataclasses.fields(base)}
    return [f for f in dataclasses.fields(config_cls) if f.name not in common and f.init]


def config_from(name: str, **options) -> Any:
    """A validated config of method ``name`` from plain values (unknown / mistyped keys refused)."""
    return config_class(name).from_dict(options)
