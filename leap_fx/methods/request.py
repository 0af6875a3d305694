"""From the user's request to the method's config: ``resolve(options)`` and ``method_config(options)``.

``PruneOptions`` (``leap_fx.spec``) is plain data; this is where it meets the registry:

- ``with_task(options)``: the task (default sequence-classification) and its defaults for ``data`` and
  ``method`` (causal-lm: the convention-speeches corpus and Kwon);
- ``check(options)``: the task and method exist, and ``task_options`` / ``method_options`` are fields of
  their configs (a bad request fails here, before anything is loaded or written: the CLI and
  ``run_prune`` call it);
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
from leap_fx.tasks.registry import task_class, task_of_model

__all__ = ["check", "resolve", "with_task", "method_config", "task_config", "default_target", "SHARED"]

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


def with_task(options: PruneOptions) -> PruneOptions:
    """A copy with ``task`` (unset: read from ``--model``'s ``config.architectures``, a ``.gguf`` is a causal LM,
    else sequence-classification), and ``data`` and ``method`` from the task's defaults where left unset."""
    cls = task_class(options.task or task_of_model(options.model))
    fill = {"task": cls.task}
    if options.data is None:
        fill["data"] = cls.default_data
    if options.method is None:
        fill["method"] = cls.default_method
    return options.replace(**fill)


def check(options: PruneOptions) -> MethodConfig:
    """The request is valid for its task and method: returns the (resolved) method config, or raises
    ``ValueError`` naming what is wrong."""
    options = with_task(options)
    task_config(options)
    if options.method not in config_names():
        raise ValueError(f"method={options.method!r}: use one of {config_names()}")
    cls = config_class(options.method)
    own = {f.name for f in cls.own_fields(MaskSpec if issubclass(cls, MaskSpec) else MethodConfig)}
    unknown = sorted(set(options.method_options) - own)
    if unknown:
        raise ValueError(f"method {options.method!r} has no option(s) {unknown}; its options: {sorted(own)}")
    return method_config(options)


def task_config(options: PruneOptions) -> TaskConfig:
    """The task's config from ``task_options``; unknown fields are refused, naming the task's."""
    cls = task_class(options.task or task_of_model(options.model))
    unknown = sorted(set(options.task_options) - cls.field_names())
    if unknown:
        raise ValueError(f"task {cls.task!r} has no option(s) {unknown}; its options: {sorted(cls.field_names())}")
    return cls.from_dict(dict(options.task_options))


def _job_target(options: PruneOptions, method_cls: type, granularity: Optional[str]) -> str:
    """The target when the user gave none: the task's (if the granularity can realise it), else the method's."""
    wanted = task_class(options.task or task_of_model(options.model)).default_target
    if wanted is not None and (not Target.parse(wanted).needs_strip
                               or MaskSpec(1.0, granularity or "unstructured", options.mask_block_size).structured):
        return wanted
    return default_target(method_cls, granularity, options.mask_block_size)


def resolve(options: PruneOptions) -> PruneOptions:
    """A copy with the task's defaults (``with_task``), every ``None`` budget from the mode (the task's
    ``modes``, else ``MODES``) and the method's job defaults (module docstring)."""
    options = with_task(options)
    cls, task = config_class(options.method), task_class(options.task)
    mode = {**MODES[options.mode], **task.modes.get(options.mode, {})}
    fill = {k: v for k, v in mode.items() if getattr(options, k) is None}
    for name in JOB_FIELDS:
        if getattr(options, name) is None:
            fill[name] = getattr(cls.job, name)
    if options.target is None and options.target_density is None:
        fill.update(_target_fields(_job_target(options, cls, fill.get("granularity", options.granularity))))
    return options.replace(**fill)


def method_config(options: PruneOptions) -> MethodConfig:
    """The method's config: shared fields, then its job options, then ``method_options`` (validated)."""
    options = with_task(options)
    cls = config_class(options.method)
    names = cls.field_names()
    shared = {k: getattr(options, v) for k, v in SHARED.items() if k in names and getattr(options, v) is not None}
    if "granularity" in names and "granularity" not in shared:
        shared["granularity"] = cls.job.granularity
    defaults = {k: v for k, v in cls.job.options.items() if k in names}
    if options.target is None and options.target_density is None and "target" in names:
        defaults.update(_target_fields(_job_target(options, cls, shared.get("granularity"))))
    return cls.from_dict({**defaults, **shared, **options.method_options})
