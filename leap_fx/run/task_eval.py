"""``leap-fx eval`` for a task run (token classification, QA, image classification): the run's settings
come from its ``report.json`` (resolved options, label names, max length, stride, image preprocessing) and
its ``tokenizer/``; the model is its ``model.onnx`` (onnxruntime) or its ``slim/`` folder (PyTorch).

Rows: the run's own data reproduces the run's split (``--split test`` by default: the report's test
figure); another file (``--data``) is scored whole (``--split all``) unless a split is asked for; a file
with labels the model never saw is refused.
"""
from __future__ import annotations

import os
from typing import Optional

from leap_fx.hf.models import load_tokenizer
from leap_fx.methods.request import task_config
from leap_fx.spec.options import PruneOptions
from leap_fx.tasks import JOB_TASKS
from leap_fx.tasks.image_classification.preprocess import ImagePrep, image_prep
from leap_fx.tasks.registry import build_task
from leap_fx.tasks.supervised import TaskData
from passes.export import load_slim
from passes.export.metadata import read_metadata
from passes.export.slim_io import MANIFEST
from passes.io import read_json

__all__ = ["task_run", "task_eval"]


def task_run(path: str) -> Optional[tuple[str, dict]]:
    """``(run folder, report)`` when ``path`` (a run folder, its ``model.onnx`` or ``slim/``) is a task run."""
    path = os.path.abspath(path.rstrip("/"))
    folder = path if os.path.isdir(path) and not os.path.isfile(os.path.join(path, MANIFEST)) else os.path.dirname(path)
    report = os.path.join(folder, "report.json")
    if path.endswith(".onnx") and read_metadata(path).get("task") not in JOB_TASKS:
        return None
    if not os.path.isfile(report):
        return None
    rep = read_json(report, "run report")
    return (folder, rep) if isinstance(rep, dict) and rep.get("task") in JOB_TASKS else None


def _processor(task, folder: str, report: dict):
    settings = report["data"]["settings"]
    if task.name != "image-classification":
        return load_tokenizer(os.path.join(folder, "tokenizer"))
    source = report["model"]["source"]
    if settings.get("preprocessing") == "preprocessor_config.json" and os.path.isdir(source):
        from transformers import AutoConfig  # import weight: transformers
        return image_prep(source, AutoConfig.from_pretrained(source, trust_remote_code=False))
    return ImagePrep(tuple(settings["image_size"]), int(settings["num_channels"]), list(settings["image_mean"]),
                     list(settings["image_std"]), float(settings["rescale_factor"]))


def _rows(task, opts, args, labels):
    """``(TaskData with the one split scored, split name, how)``."""
    run_data = opts.data
    data = args.data or run_data
    own = args.data is None or (os.path.exists(data) and run_data and os.path.exists(run_data)
                                and os.path.samefile(data, run_data))
    name = args.split or ("test" if own else "all")
    if own and name != "all":
        rows = task.read(opts)[name]
        how = f"the run's {name} split ({run_data}, seed {opts.split_seed}), as its report scored it"
    elif own:
        whole = task.read(opts.replace(max_train_examples=None, max_eval_examples=None))
        rows = whole["train"]
        for part in ("validation", "test"):
            rows.rows = rows.rows + whole[part].rows
        how = f"all rows of {data}"
    else:
        rows = task.read_file(data, opts)
        if labels is not None:
            task.check_known(rows, labels)
        how = f"all rows of {data}"
    return TaskData({name: rows}, labels, data), name, how


def task_eval(args, path: str) -> Optional[list[str]]:
    """``leap-fx eval`` of a task run (module doc): the lines to print, or None when ``path`` is no task run."""
    found = task_run(path)
    if found is None:
        return None
    folder, report = found
    known = set(PruneOptions.__dataclass_fields__)
    opts = PruneOptions.from_dict({k: v for k, v in report["resolved_options"].items() if k in known})
    if args.limit is not None:
        opts = opts.replace(max_eval_examples=args.limit)
    task = build_task(task_config(opts))
    data, name, how = _rows(task, opts, args, report["data"].get("label_names"))
    split = task.encode(data, _processor(task, folder, report), opts)[0][name]
    onnx = path if path.endswith(".onnx") else os.path.join(folder, "model.onnx")
    if os.path.isfile(os.path.join(path, MANIFEST)):
        scores, kind = task.score(load_slim(path), split), "pytorch"
    else:
        scores, kind = task.score_onnx(onnx, split), "onnxruntime"
        path = onnx
    metric = task.config.metric
    rest = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items() if k != metric)
    return [f"{name} {metric} {scores[metric]:.4f} on {len(split)} rows: {how} ({kind}, {path})",
            f"  {rest}; task {task.name}; run settings from {os.path.join(folder, 'report.json')}"]
