"""A registry of configs and their handlers, as torchao maps a config dataclass to its handler: name ->
config class (plain data, known eagerly), config class -> handler class (registered by the handler's own
module, imported lazily through the config's ``handler = "module:Class"``, since handlers import torch).
The methods (``leap_fx.methods.registry``) and the tasks (``leap_fx.tasks.registry``) each hold one."""
from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["Registry"]


class Registry:
    """Configs of one ``kind`` (``"method"``, ``"task"``): subclasses of ``base`` naming themselves in the
    class attribute ``kind`` (``method: ClassVar[str] = "leap"``)."""

    def __init__(self, kind: str, base: type):
        self.kind, self.base = kind, base
        self.configs: dict[str, type] = {}
        self.handlers: dict[type, type] = {}

    def add(self, config_cls: type) -> type:
        """Make ``config_cls`` known by its name (a name taken by another config is refused)."""
        name = config_cls.__dict__.get(self.kind) or getattr(config_cls, self.kind, "")
        if not isinstance(config_cls, type) or not issubclass(config_cls, self.base) or not name:
            raise TypeError(f"{getattr(config_cls, '__name__', config_cls)} must subclass leap_fx.spec."
                            f"{self.base.__name__} and name its {self.kind}: {self.kind}: ClassVar[str] = '<name>'")
        other = self.configs.get(name)
        if other is not None and other is not config_cls:
            raise ValueError(f"{self.kind} name {name!r} is taken by {other.__name__}")
        self.configs[name] = config_cls
        return config_cls

    def register(self, config_cls: type) -> Callable[[type], type]:
        """Class decorator: the handler implements the config ``config_cls`` (added if new)."""
        self.add(config_cls)

        def deco(handler: type) -> type:
            handler.name = getattr(config_cls, self.kind)
            handler.config_class = config_cls
            self.handlers[config_cls] = handler
            return handler
        return deco

    def config_class(self, name: str, known: list[str]) -> type:
        """The config class named ``name``; an unknown name lists ``known``."""
        if name not in self.configs:
            raise ValueError(f"unknown {self.kind} {name!r}: use one of {known}")
        return self.configs[name]

    def handler(self, config_cls: type) -> type:
        """The handler of ``config_cls`` (or of its nearest base with one), importing its module if needed."""
        for cls in config_cls.__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
            ref = cls.__dict__.get("handler")
            if isinstance(ref, str) and ref:
                module, _, attr = ref.partition(":")
                importlib.import_module(module)  # handlers import torch: loaded when first built
                if cls not in self.handlers:
                    raise TypeError(f"{module}.{attr} does not register itself for {cls.__name__} "
                                    f"(decorate it with @register({cls.__name__}))")
                return self.handlers[cls]
        raise TypeError(f"no {self.kind} is registered for {config_cls.__name__}; registered: "
                        f"{sorted(self.configs)}")
