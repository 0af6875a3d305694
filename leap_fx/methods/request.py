"""From the user's request to the method's config: ``resolve(options)`` and ``method_config(options)``.

``PruneOptions`` (``leap_fx.spec``) is plain data; this is where it meets the registry:

- ``check(options)``: the method exists and prunes, and its ``method_options`` are fields of its config
  (a bad request fails here, before anything is loaded or written: the CLI and ``run_prune`` call it);
- ``resolve(options)``: every budget the user left ``None`` from ``MODES``; ``granularity``, ``target``,
  ``lr`` and ``student_init`` from the method's ``JobDefaults`` (a target the granularity cannot realise,
  e.g. ``flops:`` with ``unstructured``, falls back to ``density:0.3``);
- ``method_config(options)``: the config: the shared fields, the method's job options, then the user's
  ``method_options``; validated by the config itself.
"""
from __future__ import annotations

from typing import Optional

from leap_fx.methods.registry import config_class, config_names
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.method import MethodConfig
from leap_fx.spec.options import MODES, PruneOptions
from leap_fx.spec.target import DEFAULT_TARGET, Target
from leap_fx.spec.task import TaskConfig
from leap_fx.tasks.registry import task_class

__all__ = ["check", "resolve", "method_config", "task_config", "default_target", "SHARED"]

SHARED = {"target_density": "target_density", "target": "target", "granularity": "granularity",
          "block_size": "mask_block_size"}  # MaskSpec field <- the PruneOptions field the job sets it from
JOB_FIELDS = ("granularity", "lr", "student_init")                  # PruneOptions fields a method's job defaults fill


def default_target(cls: type, granularity: Optional[str], block_size: int = 32) -> str:
    """The method's job target if ``granularity`` can realise it, else ``density:0.3``."""
    wanted = cls.job.target
    if wanted is None:
        return DEFAULT_TARGET
    if Target.parse(wanted).needs_strip and not MaskSpec(1.0, granularity or "unstructured", block_size).structured:
        return DEFAULT_TARGET
    return wanted


def _target_fields(target: str) -> dict:
    """A density target as ``target_density``, any other as ``target``."""
    goal = Target.parse(target)
    return {"target_density": goal.value} if goal.unit == "density" else {"target": str(goal)}


def check(options: PruneOptions) -> MethodConfig:
    """The request is valid for its method: returns the (resolved) method config, or raises ``ValueError``."""
    if options.method not in config_names():
        raise ValueError(f"method={options.method!r}: use one of {config_names()}")
    cls = config_class(options.method)
    own = {f.name for f in cls.own_fields(MaskSpec if issubclass(cls, MaskSpec) else MethodConfig)}
    unknown = sorted(set(options.method_options) - own)
    if unknown:
        raise ValueError(f"method {options.method!r} has no option(s) {unknown}; its options: {sorted(own)}")
    if options.task is not None:
        task_config(options)
    return method_config(options)


def task_config(options: PruneOptions, task: Optional[str] = None) -> TaskConfig:
    """The task's config from ``task_options`` (``task``: the task when ``options.task`` is unset, e.g.
    inferred from the model); unknown fields are refused, naming the task's."""
    cls = task_class(task or options.task or "sequence-classification")
    unknown = sorted(set(options.task_options) - cls.field_names())
    if unknown:
        raise ValueError(f"task {cls.task!r} has no option(s) {unknown}; its options: {sorted(cls.field_names())}")
    return cls.from_dict(dict(options.task_options))


def resolve(options: PruneOptions) -> PruneOptions:
    """A copy with every ``None`` budget from ``MODES`` and the method's job defaults (module docstring)."""
    cls = config_class(options.method)
    fill = {k: v for k, v in MODES[options.mode].items() if getattr(options, k) is None}
    for name in JOB_FIELDS:
        if getattr(options, name) is None:
            fill[name] = getattr(cls.job, name)
    if options.target is None and options.target_density is None:
        fill.update(_target_fields(default_target(cls, fill.get("granularity", options.granularity),
                                                  options.mask_block_size)))
    return options.replace(**fill)


def method_config(options: PruneOptions) -> MethodConfig:
    """The method's config: shared fields, then its job options, then ``method_options`` (validated)."""
    cls = config_class(options.method)
    names = cls.field_names()
    shared = {k: getattr(options, v) for k, v in SHARED.items() if k in names and getattr(options, v) is not None}
    if "granularity" in names and "granularity" not in shared:
        shared["granularity"] = cls.job.granularity
    defaults = {k: v for k, v in cls.job.options.items() if k in names}
    if options.target is None and options.target_density is None and "target" in names:
        defaults.update(_target_fields(default_target(cls, shared.get("granularity"), options.mask_block_size)))
    return cls.from_dict({**defaults, **shared, **options.method_options})
