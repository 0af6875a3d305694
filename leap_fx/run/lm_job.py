"""The language-model job: model -> data -> method (the dense model is the teacher) -> fold -> strip ->
(``--recover N``: N steps of fine-tuning, ``lm_recover.py``) -> ONNX with a KV cache -> perplexity and
tokens/s in onnxruntime -> report.

``run_lm(options)`` is ``run_prune`` for ``task="causal-lm"``. It shares the run folder (``rundir.py``:
only its own files, locks, ``--overwrite`` / ``--resume``), the method registry, the loop and the graph
passes with the classification job; what differs is the task's (``leap_fx.tasks.causal_lm``): no
teacher fine-tune (the pretrained LM is the teacher: distillation targets are its next-token
distributions), packed text blocks, next-token losses, perplexity, a KV-cache export and decoding speed.
The method runs through the plugin API (``leap_fx.Pruner``: ``train`` or ``calibrate``, then ``finish``), the
same object a user drives by hand, with the same safeguards.
Writes in ``--out``: ``model.onnx`` (+ ``model.int8.onnx``), ``tokenizer/``, ``slim/``, ``report.json``,
``options.json``, ``train/`` (trained methods).
"""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import replace

import torch

from leap_fx.data.batches import iterate_batches
from leap_fx.env.device import choose_device
from leap_fx.methods.request import check, method_config, resolve, task_config
from leap_fx.plugin.pruner import Pruner
from leap_fx.run.clock import Clock
from leap_fx.run.frame import in_rundir, start
from leap_fx.run.lm_recover import check_recover, recover
from leap_fx.run.lm_report import lm_report, lm_summary, measure_lm
from leap_fx.run.rundir import RunDir, save_tokenizer
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.train import TrainConfig
from leap_fx.tasks.registry import build_task
from leap_fx.train.setup import total_steps
from passes.analyze import analyze
from passes.export import save_slim
from passes.export.decoder import export_decoder
from passes.export.quantize import quantize_int8
from passes.io import write_json
from passes.strip import strip

__all__ = ["run_lm"]

CHECKPOINT_MINUTES = 2.0


def lm_train_config(opts: PruneOptions, n_blocks: int) -> TrainConfig:
    cfg = TrainConfig(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, alpha=opts.alpha,
                      seed=opts.seed, checkpoint_minutes=CHECKPOINT_MINUTES, eval_batch_size=8,
                      group_by_length=False)
    steps = total_steps(cfg, {"labels": torch.zeros(n_blocks)})
    return replace(cfg, log_every=max(1, steps // 50))


def run_lm(options: PruneOptions, model=None, tokenizer=None) -> dict:
    """The whole language-model job; returns the report (also ``<out>/report.json``). ``model`` /
    ``tokenizer``: an injected causal LM instead of ``options.model``."""
    check(options)
    opts = resolve(options.replace(task="causal-lm"))
    out, clock = start(opts)
    task = build_task(task_config(opts))
    check_recover(opts, task.config.recover)
    rundir = RunDir(out, opts)
    rundir.check()
    with clock.stage("model"):
        if model is None:
            model, tokenizer = task.load_model(task.model_folder(opts.model, opts.cache_dir))
        elif tokenizer is None:
            raise ValueError("run_prune(model=...) also needs tokenizer=... (the model's tokenizer)")
    with clock.stage("data"):
        data = task.load_data(opts, tokenizer)
    return in_rundir(rundir, lm_summary, lambda: _run(task, opts, options, model, tokenizer, data, clock, out))


def _prune(task, opts, pruner: Pruner, data, out):
    """The method's part on the blocks, through the plugin API (``Pruner``: the library's loop or the
    one-shot calibration, then ``finish``: fold and the target check): ``(folded model, history, metrics)``."""
    if pruner.kind == "trained":
        res = pruner.train(task.tensors(data.blocks["train"]), task.tensors(data.blocks["validation"]),
                           out_dir=os.path.join(out, "train"), resume=opts.resume, quiet=not opts.verbose,
                           evaluate_fn=task.evaluate)
        pruner.finish()
        return pruner.model.eval(), res.history, res.metrics
    batches = list(iterate_batches(task.tensors(data.blocks["calibration"]), pruner.train_config.batch_size))
    calibration = pruner.calibrate(batches)
    pruner.finish()
    return pruner.model.eval(), [], {"step": 0, "calibration": calibration,
                                     "blocks": int(data.blocks["calibration"].shape[0])}


def _run(task, opts, options, model, tokenizer, data, clock: Clock, out: str) -> dict:
    device = choose_device(opts.device)
    teacher = model.eval().requires_grad_(False).to(device)
    student = copy.deepcopy(teacher).requires_grad_(True)
    example = task.example_inputs(data, 2)
    train_cfg = lm_train_config(opts, int(data.blocks["train"].shape[0]))
    config = replace(method_config(opts), cost_seq=task.config.block_size, cost_batch=1)
    steps = total_steps(train_cfg, task.tensors(data.blocks["train"]))
    with clock.stage("analyze"):
        plan = analyze(student, {k: v.to(device) for k, v in example.items()}, residual=config.residual)
    pruner = Pruner(student, config, plan=plan, steps=steps, teacher=teacher, task_loss=task.task_loss(),
                    train_config=train_cfg)
    method = pruner.method
    with clock.stage(f"{method.kind} ({method.name})"):
        slim, history, metrics = _prune(task, opts, pruner, data, out)
    slim, teacher = slim.cpu().eval(), teacher.cpu()
    with clock.stage("strip"):
        stripped = strip(slim, plan, example, sublayers=config.strip_sublayers)
    recovered = {"steps": 0}
    if task.config.recover:
        with clock.stage(f"recover ({task.config.recover} steps)"):
            slim, rec_history, recovered = recover(task, opts, slim, teacher, data, task.config.recover, train_cfg,
                                                   out, device)
            history = history + rec_history
            teacher = teacher.cpu()
    with clock.stage("export"):
        onnx_path, tok_dir = os.path.join(out, "model.onnx"), os.path.join(out, "tokenizer")
        save_tokenizer(tokenizer, tok_dir)
        export = task.export(slim, onnx_path, tokenizer, tok_dir, {"method": method.name, "target": str(config.goal)})
        save_slim(slim, os.path.join(out, "slim"), plan, stripped)
    with tempfile.TemporaryDirectory(prefix="leapfx-lm-") as tmp:
        with clock.stage("dense export"):
            dense = export_decoder(teacher, os.path.join(tmp, "dense.onnx"))
        int8 = None
        if opts.quantize == "int8":
            with clock.stage("int8"):
                int8 = quantize_int8(onnx_path, os.path.join(out, "model.int8.onnx"))
        with clock.stage("perplexity + speed"):
            measured = measure_lm(task, opts, data, teacher, slim, plan, example, dense.path, onnx_path,
                                  int8["path"] if int8 else None)
    report = lm_report(opts, options, task, method, config, data, plan, stripped, export, dense, int8, metrics,
                       measured, history)
    report["recover"] = recovered
    report["timing"] = clock.total()
    write_json(os.path.join(out, "report.json"), report)
    print(lm_summary(report), flush=True)
    return report
