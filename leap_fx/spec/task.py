"""``TaskConfig``: what every task's config declares, as plain data (no torch).

A task is a config (a dataclass subclassing ``TaskConfig``) plus a handler (``leap_fx.tasks``): how to
read its data, the loss and distillation target its outputs give an objective, its metric, its example
inputs and its ONNX inputs, outputs and metadata. The config declares:

- ``task``: the name (``leap-fx prune --task NAME``); ``handler``: ``"module:Class"``, imported when built;
- ``auto_class``: the transformers Auto class its models load with;
- ``architectures``: suffixes of ``config.architectures`` that mean this task (how ``--task`` is inferred);
- ``metric``: the headline metric's name and whether higher is better;
- the job's defaults for the task: ``default_data`` (``--data`` left unset), ``default_method``,
  ``default_target`` (None: the method's), ``modes`` (budget fields of ``PruneOptions`` per mode that
  differ from ``spec.options.MODES``);
- its own fields (each with help text as field metadata, ``fields.option``): ``leap-fx prune`` flags.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

from leap_fx.spec.fields import help_of
from passes.io import JsonDataclass

__all__ = ["TaskConfig"]


@dataclass
class TaskConfig(JsonDataclass):
    """Base of every task's config; see the module docstring."""

    task: ClassVar[str] = ""
    handler: ClassVar[str] = ""
    auto_class: ClassVar[str] = "AutoModel"
    architectures: ClassVar[tuple[str, ...]] = ()
    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    default_data: ClassVar[str] = "rotten_tomatoes"
    default_method: ClassVar[str] = "leap"
    default_target: ClassVar[Optional[str]] = None
    modes: ClassVar[dict] = {}

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: help_of(f) for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.init}
