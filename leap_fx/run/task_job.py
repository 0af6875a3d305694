"""The job of a supervised task beyond sentence classification (token classification, extractive QA,
image classification): data -> model -> dense teacher -> method (through ``leap_fx.plugin.Pruner``, the
plugin API) -> fold -> strip -> ONNX -> the task's metric in onnxruntime -> report.

``run_task(options)`` is ``run_prune`` for those tasks. It shares the run folder (``rundir.py``: only its
own files, locks, ``--overwrite`` / ``--resume``), the method registry, the loop and the graph passes with
the classification job; what differs is the task's (``leap_fx.tasks.<task>.handler``): reading and
encoding its data, its loss and distillation target, its metric, its ONNX inputs, outputs and metadata.
The dense teacher is fine-tuned in the run (``OUT/teacher``, resumable), or given (``--teacher-model``).
Writes in ``--out``: ``model.onnx``, ``slim/``, ``tokenizer/`` (text tasks), ``report.json``,
``options.json``, ``train/`` and ``teacher/`` (deleted once the report is written unless
``--keep-checkpoints``).
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import replace


from leap_fx.data.batches import iterate_batches
from leap_fx.methods.dense.config import DenseConfig
from leap_fx.methods.registry import build
from leap_fx.methods.request import check, method_config, resolve, task_config
from leap_fx.plugin import Pruner, tokens_per_example
from leap_fx.run.clock import Clock
from leap_fx.run.frame import in_rundir, start
from leap_fx.run.disk import remove_checkpoints
from leap_fx.run.rundir import RunDir, save_tokenizer
from leap_fx.run.task_report import task_report, task_summary
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.train import TrainConfig
from leap_fx.tasks.registry import build_task
from leap_fx.train.loop import train
from leap_fx.train.setup import total_steps
from leap_fx.train.teacher import TEACHER_CONFIG
from passes.analyze import analyze
from passes.export import save_slim
from passes.export.metadata import write_metadata
from passes.io import write_json

__all__ = ["run_task"]

CHECKPOINT_MINUTES = 2.0
CALIBRATION_EXAMPLES = 2048


def run_task(options: PruneOptions, model=None, processor=None) -> dict:
    """The whole job for ``options.task``; returns the report (also ``<out>/report.json``). ``model`` /
    ``processor`` (the tokenizer or image processor): an injected model instead of ``options.model``."""
    check(options)
    opts = resolve(options)
    out, clock = start(opts)
    task = build_task(task_config(opts))
    rundir = RunDir(out, opts)
    rundir.check()
    with clock.stage("data"):
        data = task.read(opts)
    with clock.stage("model"):
        folder = None
        if model is None:
            folder = task.model_folder(opts.model)
            model, processor = task.load_model(folder, data.label_names, opts.seed)
        elif processor is None:
            raise ValueError("run_prune(model=...) also needs tokenizer=... (the model's tokenizer or image processor)")
        splits, settings = task.encode(data, processor, opts, model.config)
    return in_rundir(rundir, task_summary,
                     lambda: _run(task, opts, options, model, processor, folder, data, splits, settings, clock, out))


def _teacher(task, opts, model, data, splits, out: str):
    """``(dense teacher, info)``: ``--teacher-model`` as given, else the model fine-tuned on the data."""
    if opts.teacher_model is not None:
        teacher, _ = task.load_model(opts.teacher_model, data.label_names, opts.seed)
        info = {"path": os.path.abspath(opts.teacher_model), "trained": False}
    else:
        cfg = replace(TEACHER_CONFIG, epochs=opts.teacher_epochs, batch_size=opts.batch_size, lr=opts.teacher_lr,
                      seed=opts.seed, checkpoint_minutes=CHECKPOINT_MINUTES)
        method = build(DenseConfig(), total_steps(cfg, splits["train"].tensors), cfg, task.task_loss())
        res = train(copy.deepcopy(model), None, splits["train"].tensors, splits["validation"], cfg, method,
                    out_dir=os.path.join(out, "teacher"), resume=opts.resume, quiet=not opts.verbose,
                    evaluate_fn=task.evaluate)
        teacher, info = res.model, {"config": cfg.to_dict(), "trained": True}
    teacher.eval()
    info["metrics"] = {name: task.score(teacher, splits[name]) for name in ("validation", "test")}
    return teacher, info


def _prune(pruner: Pruner, task, opts, splits, out: str) -> tuple[list, dict]:
    """The method's part through the plugin API: ``(history, metrics)``; the masks are folded (checked)."""
    train_split = splits["train"]
    if pruner.kind == "trained":
        res = pruner.train(train_split.tensors, splits["validation"], out_dir=os.path.join(out, "train"),
                           resume=opts.resume, quiet=not opts.verbose, evaluate_fn=task.evaluate)
        history, metrics = res.history, {"step": res.metrics.get("step")}
    else:
        n = min(CALIBRATION_EXAMPLES, train_split.features)
        batches = iterate_batches({k: v[:n] for k, v in train_split.tensors.items()}, opts.batch_size)
        history, metrics = [], {"step": 0, "examples": n, "calibration": pruner.calibrate(batches)}
    metrics["target"] = pruner.finish()
    return history, metrics


def _run(task, opts, options, model, processor, folder, data, splits, settings, clock: Clock, out: str) -> dict:
    with clock.stage("dense teacher"):
        teacher, teacher_info = _teacher(task, opts, model, data, splits, out)
    student = copy.deepcopy(teacher) if opts.student_init == "teacher" else model
    example, flop_input = task.example_inputs(splits["train"], 2), task.flop_inputs(splits["train"])
    train_cfg = TrainConfig(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, alpha=opts.alpha,
                            seed=opts.seed, checkpoint_minutes=CHECKPOINT_MINUTES)
    steps = total_steps(train_cfg, splits["train"].tensors)
    train_cfg = replace(train_cfg, log_every=max(1, steps // 50))
    base = method_config(opts)
    with clock.stage("analyze"):
        plan = analyze(student, example, residual=base.residual)
    config = replace(base, cost_seq=tokens_per_example(student, plan, flop_input), cost_batch=int(opts.batch_size))
    pruner = Pruner(student, config, plan=plan, example_inputs=example, steps=steps, teacher=teacher,
                    task_loss=task.task_loss(), train_config=train_cfg)
    with clock.stage(f"{pruner.kind} ({pruner.method.name})"):
        history, metrics = _prune(pruner, task, opts, splits, out)
    slim = pruner.model.eval()
    with clock.stage("strip + export"):
        stripped = pruner.strip(example)
        onnx_path = os.path.join(out, "model.onnx")
        export = task.export(slim, example, onnx_path)
        save_slim(slim, os.path.join(out, "slim"), plan, stripped)
        if hasattr(processor, "save_pretrained"):  # a tokenizer (text tasks); image settings go in the metadata
            save_tokenizer(processor, os.path.join(out, "tokenizer"))
    with clock.stage("evaluate"):
        pruned = {"validation": task.score_onnx(onnx_path, splits["validation"]),
                  "test": task.score_onnx(onnx_path, splits["test"]),
                  "validation_torch": task.score(slim, splits["validation"])}
    report = task_report(task, opts, options, pruner, folder, data, splits, teacher, teacher_info, slim, plan,
                         flop_input, stripped, export, pruned, metrics, settings)
    report["onnx"]["metadata"] = write_metadata(onnx_path, task.metadata(report, settings))
    report["onnx"]["size_bytes"] = os.path.getsize(onnx_path)
    report["timing"] = clock.total()
    write_json(os.path.join(out, "report.json"), report)
    if not opts.keep_checkpoints:
        remove_checkpoints(out)
    print(task_summary(report), flush=True)
    for warning in report["warnings"]:
        print(f"leap-fx: WARNING: {warning}", file=sys.stderr, flush=True)
    return report
