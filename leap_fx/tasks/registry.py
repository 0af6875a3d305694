"""One registry of tasks: name -> config class (light, eager), config class -> handler (lazy, by the
config's ``"module:Class"``), as the methods' (``leap_fx.methods.registry``). ``task_for(architectures)``
infers a model's task from ``config.architectures``."""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from leap_fx.hf.tasks import DEFAULT_LM_NAMES
from leap_fx.spec.registry import Registry
from leap_fx.spec.task import TaskConfig

__all__ = ["add_task", "register_task", "task_names", "task_class", "task_handler", "build_task", "task_for",
           "task_of_model", "DEFAULT_TASK"]

DEFAULT_TASK = "sequence-classification"
REGISTRY = Registry("task", TaskConfig)
_TASKS, _HANDLERS = REGISTRY.configs, REGISTRY.handlers  # task name -> config class; config class -> handler


def add_task(config_cls: type) -> type:
    return REGISTRY.add(config_cls)


def register_task(config_cls: type):
    """Class decorator: the handler implements the task whose config is ``config_cls``."""
    return REGISTRY.register(config_cls)


def task_names() -> list[str]:
    return sorted(_TASKS)


def task_class(name: str) -> type:
    return REGISTRY.config_class(name, task_names())


def task_handler(config_cls: type) -> type:
    return REGISTRY.handler(config_cls)


def build_task(config: TaskConfig):
    if not isinstance(config, TaskConfig):
        raise TypeError(f"build_task needs a task config, got {type(config).__name__}")
    return task_handler(type(config))(config)


def task_for(architectures: Optional[Sequence[str]]) -> str:
    """The task whose ``architectures`` suffix matches the model's ``config.architectures`` (else the default)."""
    for arch in architectures or ():
        for name, cls in _TASKS.items():
            if any(str(arch).endswith(suffix) for suffix in cls.architectures):
                return name
    return DEFAULT_TASK


def task_of_model(model: Optional[str]) -> str:
    """The task of ``--model`` without loading it: a ``.gguf`` file or the default LM's name is a causal LM;
    a folder's ``config.json`` ``architectures`` decide (``task_for``); anything else is the default task."""
    if model is None:
        return DEFAULT_TASK
    if model.lower().endswith(".gguf") or model.lower() in DEFAULT_LM_NAMES:
        return "causal-lm"
    config = os.path.join(model, "config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as fh:
                return task_for(json.load(fh).get("architectures"))
        except (OSError, ValueError, AttributeError):
            return DEFAULT_TASK  # an unreadable config is reported by the model loader, with its path
    return DEFAULT_TASK
