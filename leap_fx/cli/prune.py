"""``leap-fx prune``: the flags are ``PruneOptions``' fields and every method's own config fields, with
the help text written once on the fields (``leap_fx.spec.fields.option``); nothing here imports torch.

Method options are grouped by method; an option several methods share is listed in the first group and
named in the others. A method's job defaults (granularity, target, learning rate) are read from its
config's ``job`` for the help text, never copied.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from leap_fx.cli.command import Command
from leap_fx.methods.registry import config_class, config_names
from leap_fx.methods.request import check
from leap_fx.spec.fields import flag_of, help_of
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.method import MethodConfig
from leap_fx.spec.options import DEVICES, QUANTIZE, PruneOptions
from leap_fx.tasks.registry import DEFAULT_TASK, task_class, task_names, task_of_model
from passes.io import read_json

__all__ = ["Prune", "method_option_fields", "task_option_fields", "option_type"]

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
NOT_FLAGS = ("method_options", "task_options")  # PruneOptions fields with no flag of their own


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE or low in FALSE:
        return low in TRUE
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def option_type(field: dataclasses.Field, owner: type):
    """The argparse type of a dataclass field (its annotation, optional or not)."""
    hint = typing.get_type_hints(owner).get(field.name, str)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return {bool: _bool, int: int, float: float}.get(base, str)


def _base(cls: type) -> type:
    return MaskSpec if issubclass(cls, MaskSpec) else MethodConfig


def method_option_fields() -> dict[str, tuple[dataclasses.Field, type, list[str]]]:
    """Every method's own config fields: name -> (field, config class it was read from, owning methods)."""
    table: dict[str, tuple[dataclasses.Field, type, list[str]]] = {}
    for name in config_names():
        cls = config_class(name)
        for f in cls.own_fields(_base(cls)):
            if f.name in table:
                table[f.name][2].append(name)
            else:
                table[f.name] = (f, cls, [name])
    return table


def task_option_fields() -> dict[str, tuple[dataclasses.Field, type, list[str]]]:
    """Every task's config fields: name -> (field, config class, owning tasks)."""
    table: dict[str, tuple[dataclasses.Field, type, list[str]]] = {}
    for name in task_names():
        cls = task_class(name)
        for f in dataclasses.fields(cls):
            if f.init:
                if f.name in table:
                    table[f.name][2].append(name)
                else:
                    table[f.name] = (f, cls, [name])
    return table


def _add_group(p, title: str, owner_names: list[str], table: dict, prefix: str) -> None:
    """One argument group per owner (method or task); a shared option is listed once, in its first owner's."""
    for owner in owner_names:
        own = [k for k, (_, _, owners) in table.items() if owner in owners]
        shared = [k for k in own if table[k][2][0] != owner]
        desc = f"also takes {', '.join('--' + k.replace('_', '-') for k in shared)} (listed above)" if shared else None
        group = p.add_argument_group(f"{owner} {title}", desc)
        for k in own:
            f, owner_cls, owners = table[k]
            if owners[0] == owner:
                group.add_argument("--" + k.replace("_", "-"), dest=prefix + k, type=option_type(f, owner_cls),
                                   default=None, metavar=k.upper(), help=f"[{', '.join(owners)}] {help_of(f)}")


def _job_defaults() -> str:
    """The methods' job defaults for the help text, read from their configs."""
    parts = []
    for name in config_names():
        job = config_class(name).job
        parts.append(f"{name}: {job.granularity}, {job.target or 'density:0.3'}, lr {job.lr:g}")
    return "; ".join(parts)


def _merged(settings: dict, chosen: dict, task_chosen: dict) -> PruneOptions:
    """The options of ``settings`` with the method and task options given as flags."""
    merged = dict(settings)
    if chosen:
        merged["method_options"] = {**(merged.get("method_options") or {}), **chosen}
    if task_chosen:
        merged["task_options"] = {**(merged.get("task_options") or {}), **task_chosen}
    return PruneOptions.from_dict(merged)


def _fails(fn) -> bool:
    try:
        fn()
    except ValueError:
        return True
    return False


def _note_dropped(path: str, dropped: list[str], given: dict) -> None:
    """Name the actions an options file held that would have done something else than this command line
    (never replayed): set to other than the default, and not what the command line says."""
    defaults = {f.name: f.default for f in dataclasses.fields(PruneOptions)}
    stored = read_json(path, "--options file") if dropped else {}
    differ = [k for k in dropped if stored[k] != defaults[k] and stored[k] != given.get(k, defaults[k])]
    if differ:
        print(f"leap-fx prune: note: --options {path}: {', '.join(f'{k}={stored[k]!r}' for k in differ)} not "
              f"read (actions are given on the command line only)", file=sys.stderr)


class Prune(Command):
    name = "prune"
    help = "prune a model end to end and write report.json, plots and ONNX"
    description = ("Dense teacher -> a pruning method (trained with KD, or one-shot) -> fold -> strip -> ONNX "
                   "(parity checked) -> test accuracy in onnxruntime -> report.json, density.png, curves.png. "
                   f"Job defaults per method (granularity, target, lr): {_job_defaults()}.")

    @classmethod
    def add_arguments(cls, p) -> None:
        for f in dataclasses.fields(PruneOptions):
            if f.name in NOT_FLAGS:
                continue
            flag = flag_of(f)
            if flag is not None:
                p.add_argument(flag[0], dest=f.name, action="store_const", const=flag[1], default=None,
                               help=help_of(f))
                continue
            choices = {"method": config_names(), "quantize": QUANTIZE, "device": DEVICES, "task": task_names()}.get(f.name)
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=option_type(f, PruneOptions),
                           default=None, metavar=f.name.upper(), choices=choices, help=help_of(f))
        _add_group(p, "options", config_names(), method_option_fields(), "m_")
        _add_group(p, "task options", task_names(), task_option_fields(), "t_")
        p.add_argument("--options", metavar="JSON", help="read the settings of PruneOptions from a JSON file (e.g. "
                       "a run's options.json); never its actions (--out, --overwrite, --resume, "
                       "--keep-checkpoints, --continue-anyway, --cache-dir); command-line options override it")

    @classmethod
    def options(cls, args) -> PruneOptions:
        """The ``PruneOptions`` of the command line (and ``--options FILE``), validated like the flags, before
        anything is loaded or written: a value the file gave is named with the file."""
        base, dropped = PruneOptions.settings_from_file(args.options) if args.options else ({}, [])
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PruneOptions)
                 if f.name not in NOT_FLAGS and getattr(args, f.name) is not None}
        _note_dropped(args.options, dropped, given)
        task = given.get("task", base.get("task"))
        method = given.get("method", base.get("method")) or task_class(task or DEFAULT_TASK).default_method
        table = method_option_fields()
        chosen = {k: getattr(args, "m_" + k) for k in table if getattr(args, "m_" + k) is not None}
        wrong = [k for k in chosen if method not in table[k][2]]
        if wrong:
            raise ValueError(", ".join(f"--{k.replace('_', '-')} is an option of {', '.join(table[k][2])}"
                                       for k in wrong) + f", not of --method {method}")
        tasks = task_option_fields()
        task_chosen = {k: getattr(args, "t_" + k) for k in tasks if getattr(args, "t_" + k) is not None}
        task = {**base, **given}.get("task") or task_of_model({**base, **given}.get("model"))  # as run_prune infers it
        wrong = [k for k in task_chosen if task not in tasks[k][2]]
        if wrong:
            raise ValueError(", ".join(f"--{k.replace('_', '-')} is an option of --task {', '.join(tasks[k][2])}"
                                       for k in wrong) + f", not of --task {task}")
        options = _merged({**base, **given}, chosen, task_chosen)
        try:
            check(options)
        except ValueError as err:
            if not base or _fails(lambda: check(_merged(given, chosen, task_chosen))):
                raise
            raise ValueError(f"--options {args.options}: {err}") from None  # the file's values are to blame
        return options

    @classmethod
    def run(cls, args) -> int:
        options = cls.options(args)
        from leap_fx.run.job import run_prune  # import weight: torch, transformers
        from leap_fx.train.distributed import (  # import weight: torch
            init_from_env,
            shutdown,
        )
        init_from_env()  # torchrun --nproc_per_node N -m leap_fx prune ...: one DDP process group
        try:
            report = run_prune(options)  # prints the summary table
        finally:
            shutdown()
        rejected = (report.get("quantized") or {}).get("status") == "rejected"  # int8 below its agreement bound
        if rejected:
            print(f"leap-fx prune: failed: {report['quantized']['error']}", file=sys.stderr)
        return 0 if report.get("status") in ("complete", "worker") and not rejected else 1
