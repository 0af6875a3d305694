"""The end-to-end job: data -> dense teacher -> analyze -> method -> fold -> strip -> ONNX -> report.

``run_prune(PruneOptions(...))`` returns the report dict and writes, in ``options.out``:
``report.json``, ``density.png``, ``curves.png`` (trained methods), ``model.onnx`` (onnxruntime parity
checked, carrying the run's metadata: label names, max length, tokenizer, density, parity), ``slim/``
(``save_slim``), ``tokenizer/``, ``options.json``, ``structure.png`` and ``train/`` (history). Each file
is written atomically; ``report.json`` is written last (a run without it is unfinished); then the
training checkpoints are deleted unless ``keep_checkpoints`` (``disk.py``; sizes in the report). The
method decides the middle: a trained method runs the loop (``leap_fx.train``), a one-shot method
calibrates on training batches; everything else is the same for every method.
"""
from __future__ import annotations

import copy
import os
import shutil
import sys
from dataclasses import replace


from leap_fx.costs.latency import latency_table
from leap_fx.data import check_tokenizer, iterate_batches
from leap_fx.data.splits import data_summary
from leap_fx.hf.models import (
    default_model_dir,
    load_classifier,
    load_finetuned,
    load_tokenizer,
)
from leap_fx.methods.request import check, method_config, resolve, task_config
from leap_fx.plugin.pruner import Pruner
from leap_fx.run.clock import Clock
from leap_fx.run.frame import start
from leap_fx.run.disk import disk_report, remove_checkpoints
from leap_fx.run.inputs import (
    announce,
    check_inputs,
    check_num_labels,
    load_run_data,
    with_max_length,
)
from leap_fx.run.lm_job import run_lm
from leap_fx.run.measure import matrix_densities, measure
from leap_fx.run.onnx_export import export_classifier, write_run_metadata
from leap_fx.run.plots import write_plots
from leap_fx.run.report import build_report, check_teacher, result_warnings
from leap_fx.run.rundir import RunDir, save_tokenizer
from leap_fx.run.speed import speed_stage
from leap_fx.run.summary import summary_table
from leap_fx.run.task_job import run_task
from leap_fx.spec.options import PruneOptions
from leap_fx.spec.train import TrainConfig
from leap_fx.tasks import JOB_TASKS
from leap_fx.tasks.registry import build_task, task_of_model
from leap_fx.train import accuracy, train
from leap_fx.train.distributed import Dist
from leap_fx.train.records import density_by_kind, weight_kinds
from leap_fx.train.setup import total_steps
from leap_fx.train.teacher import TEACHER_CONFIG, train_teacher
from passes.analyze import analyze
from passes.export import save_slim
from passes.export.sparse import compact_onnx
from passes.io import write_json
from passes.strip import strip

CHECKPOINT_MINUTES = 2.0  # besides every epoch: a killed run loses at most this much training
CALIBRATION_EXAMPLES = 2048  # one-shot methods: training examples they may look at (Kwon et al.: 2K)


def teacher_config(opts: PruneOptions) -> TrainConfig:
    """The teacher fine-tune's settings (``train.teacher.TEACHER_CONFIG``) with the run's budget."""
    return replace(TEACHER_CONFIG, epochs=opts.teacher_epochs, batch_size=opts.batch_size, lr=opts.teacher_lr,
                   seed=opts.seed, checkpoint_minutes=CHECKPOINT_MINUTES)


def train_config(opts: PruneOptions, data) -> TrainConfig:
    cfg = TrainConfig(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, alpha=opts.alpha,
                      seed=opts.seed, checkpoint_minutes=CHECKPOINT_MINUTES)
    return replace(cfg, log_every=max(1, total_steps(cfg, data.train) // 100))


def dense_teacher(opts: PruneOptions, data, model=None, tokenizer=None, teacher=None, work_dir=None,
                  pretrained=None):
    """``(base model, tokenizer, teacher, info)``; the teacher is fine-tuned (cached) unless given (``teacher``,
    or ``opts.teacher_model``: a fine-tuned checkpoint). The data is tokenised here, once, with the model's
    tokenizer (at ``opts.max_length``, or at the length chosen from the data when it is None).
    ``pretrained``: the folder's classifier, already loaded (``check_inputs``), used as the student of
    ``student_init="pretrained"``."""
    cfg, model_dir = teacher_config(opts), None
    if model is None:
        model_dir = opts.model or default_model_dir()
        tokenizer = tokenizer or load_tokenizer(model_dir)
    elif tokenizer is None:
        raise ValueError("run_prune(model=...) also needs tokenizer=... (the model's tokenizer)")
    check_num_labels(model, data)
    if opts.max_length is None:
        opts, _ = with_max_length(opts, data, tokenizer, getattr(model or pretrained, "config", None))
    data.tokenize(tokenizer, opts.max_length)
    info = {"config": cfg.to_dict(), "cached": False, "path": None, "injected": teacher is not None}
    if teacher is None and opts.teacher_model is not None:  # the user's fine-tuned teacher, used as is
        teacher = load_finetuned(opts.teacher_model, data.label_names, tokenizer)
        info.update(path=os.path.abspath(opts.teacher_model), config=None)
    if teacher is None and model_dir is not None:
        res = train_teacher(model_dir, data, seed=opts.split_seed, max_length=opts.max_length, config=cfg,
                            cache_dir=opts.cache_dir, use_cache=opts.use_cache, quiet=not opts.verbose,
                            work_dir=work_dir, tokenizer=tokenizer)
        teacher, info["metrics"], info["cached"], info["path"] = res.model, res.metrics, res.cached, res.path
    else:
        if teacher is None:
            teacher = train(copy.deepcopy(model), None, data.train, data.validation, cfg,
                            quiet=not opts.verbose, out_dir=work_dir).model
        teacher.eval()
        info["metrics"] = {"val_accuracy": accuracy(teacher, data.validation),
                           "test_accuracy": accuracy(teacher, data.test)}
    if opts.student_init == "pretrained" and model is None:
        model = pretrained if pretrained is not None else load_classifier(
            model_dir, num_labels=len(data.label_names), seed=opts.seed, label_names=list(data.label_names))[0]
    return model, tokenizer, teacher.eval(), info


def prune_stage(pruner: Pruner, data, out: str, opts, evaluate_fn=None) -> tuple:
    """The method's part, through the plugin API (``Pruner``: the library's loop or the one-shot calibration,
    then ``finish``: fold and the target check): ``(pruned folded model, history, metrics)``; ``evaluate_fn``:
    the task's validation metric (its handler's ``evaluate``)."""
    if pruner.kind == "trained":
        res = pruner.train(data.train, data.validation, out_dir=os.path.join(out, "train"), resume=opts.resume,
                           quiet=not opts.verbose, evaluate_fn=evaluate_fn)
        pruner.finish()
        return pruner.model.eval(), res.history, res.metrics
    n = min(CALIBRATION_EXAMPLES, len(data.train))
    batches = iterate_batches({k: v[:n] for k, v in data.train.features.items()}, pruner.train_config.batch_size)
    calibration = pruner.calibrate(batches)
    dens = pruner.method.densities(pruner.model)
    metrics = {"step": 0, "examples": n, "calibration": calibration,
               **density_by_kind(pruner.model, dens, weight_kinds(pruner.plan, dens))}
    pruner.finish()
    return pruner.model.eval(), [], metrics


def slim_stage(slim, plan, example, tokenizer, out: str, compact: bool = False, sublayers: bool = False,
               keep_uncompacted: bool = False) -> dict:
    """fold is done: strip (self-checked), export (parity-checked), save the slim model and tokenizer.
    ``compact``: the zeros strip cannot remove (unstructured / block masks) are stored compactly in the
    ONNX file (``passes.export.sparse``, checked against the dense export in onnxruntime).
    ``sublayers``: emptied attention / FFN sub-layers become constants (the config's ``strip_sublayers``).
    ``keep_uncompacted``: also keep the graph before compaction (``model.uncompacted.onnx``, what int8
    quantization reads: its MatMul weights are plain initializers), deleted after the latency stage."""
    per_matrix = matrix_densities(slim, plan)  # of the folded model, before strip
    stripped = strip(slim, plan, example, sublayers=sublayers)
    onnx_path = os.path.join(out, "model.onnx")
    export = export_classifier(slim, example, onnx_path)
    uncompacted = os.path.join(out, "model.uncompacted.onnx") if compact and keep_uncompacted else None
    if uncompacted:
        shutil.copyfile(onnx_path, uncompacted)
    packed = compact_onnx(onnx_path, example) if compact else None
    save_slim(slim, os.path.join(out, "slim"), plan, stripped)
    save_tokenizer(tokenizer, os.path.join(out, "tokenizer"))
    stale = os.path.join(out, "model.failed.onnx")  # an earlier attempt's rejected graph: superseded now
    if os.path.exists(stale):
        os.remove(stale)
    return {"per_matrix": per_matrix, "strip": stripped, "export": export, "onnx_path": onnx_path,
            "compact": packed, "uncompacted": uncompacted}


def run_method_config(opts: PruneOptions, flop_input: dict):
    """The method's config with flops / latency costs counted at the run's length and batch."""
    seq = int(next(iter(flop_input.values())).shape[1])
    return replace(method_config(opts), cost_seq=seq, cost_batch=int(opts.batch_size))


def _latency_table(model, plan, example, config, opts):
    return latency_table(model, plan, example, config.cost_batch, config.cost_seq,
                         cache_dir=opts.cache_dir, use_cache=opts.use_cache, verbose=opts.verbose)


def run_prune(options: PruneOptions, model=None, tokenizer=None, teacher=None, data=None) -> dict:
    """Run the whole job; returns the report (also written to ``<out>/report.json``).

    ``model``/``tokenizer`` inject a model object (a sequence classifier) instead of ``options.model``;
    ``teacher`` injects an already fine-tuned dense model (skips the teacher fine-tune); ``data``
    injects the ``DatasetSplits`` ``load_data(options)`` would return (loaded, split and tokenised once
    by a caller running several jobs).
    """
    task = options.task or task_of_model(options.model)
    if task == "causal-lm":  # the language-model job (run/lm_job.py)
        return run_lm(options.replace(task=task), model=model, tokenizer=tokenizer)
    if task in JOB_TASKS:  # token classification, QA, image classification (run/task_job.py)
        return run_task(options.replace(task=task), model=model, processor=tokenizer)
    options = options.replace(task=task)
    dist = Dist.current()  # under torchrun: every rank trains its shard, rank 0 alone writes
    check(options)  # the method and its options: a bad request fails before anything is loaded or written
    opts = resolve(options)
    opts = opts if dist.is_main else replace(opts, verbose=False)
    out, clock = start(opts)
    rundir = RunDir(out, opts)
    if dist.is_main:
        rundir.check()  # a refused --out is refused before anything is loaded or written
    with clock.stage("data"):
        data = load_run_data(opts) if data is None else data  # sequence classification's reader, warnings held for announce
    with clock.stage("check inputs"):  # everything that can fail on bad input fails here, --out untouched
        inputs = check_inputs(opts, data, model, tokenizer, teacher)
        check_tokenizer(inputs.tokenizer, data.train, inputs.model_dir or "run_prune(tokenizer=...)")
    announce(inputs, opts.verbose and dist.is_main)
    try:
        done = dist.on_main(rundir.open)
        if done is not None:  # --resume of a finished run: its report, nothing re-run
            if dist.is_main:
                if not opts.keep_checkpoints:
                    remove_checkpoints(out)  # a run killed between report.json and the cleanup
                print(f"run in {out} is already complete:\n{summary_table(done)}", flush=True)
            return done
        report = _run(inputs, options, data, teacher, clock, dist, out)
        if dist.is_main:
            rundir.finish()
        return report
    except BaseException as err:  # Ctrl-C too: a run with nothing to resume leaves --out as it was
        note = rundir.fail() if dist.is_main else ""
        if note:
            err.add_note(note.strip())
        raise
    finally:
        rundir.close()


def _run(inputs, options, data, teacher, clock: Clock, dist, out: str) -> dict:
    """The stages after the checks, writing into the prepared ``out``."""
    opts = inputs.opts
    with clock.stage("dense teacher"):
        model, tokenizer, teacher, teacher_info = dense_teacher(
            opts, data, inputs.model if inputs.model_dir is None else None, inputs.tokenizer, teacher,
            work_dir=os.path.join(out, "teacher"), pretrained=inputs.model)
    check_teacher(teacher_info["metrics"], data, opts, inputs.length)  # no better than guessing: stop here
    student = copy.deepcopy(teacher) if opts.student_init == "teacher" else model
    task = build_task(task_config(opts))  # sequence classification's hooks (tasks/sequence_classification)
    example, flop_input = task.example_inputs(data.train, 2), task.flop_inputs(data.train)
    train_cfg = train_config(opts, data)
    config = run_method_config(opts, flop_input)
    with clock.stage("analyze"):
        plan = analyze(student, example, residual=config.residual)
    if config.goal.unit == "latency":  # measured once per model shape and machine, then cached
        with clock.stage("latency table"):
            _latency_table(student, plan, example, config, opts)
    pruner = Pruner(student, config, plan=plan, steps=total_steps(train_cfg, data.train), teacher=teacher,
                    task_loss=task.task_loss(), train_config=train_cfg)
    method = pruner.method
    with clock.stage(f"{method.kind} ({method.name})"):
        slim, history, metrics = prune_stage(pruner, data, out, opts, task.evaluate)
    if not dist.is_main:  # strip, export, evaluation and the report are rank 0's
        return {"status": "worker", "rank": dist.rank, "train": {"steps": metrics.get("step")}}
    with clock.stage("strip + export"):
        slim_files = slim_stage(slim, plan, example, tokenizer, out,
                                compact=method.uses_masks and not config.structured,
                                sublayers=config.strip_sublayers,
                                keep_uncompacted=opts.quantize is not None)
    with clock.stage("evaluate + count"):
        measured = measure(slim, teacher, data, plan, flop_input, slim_files["onnx_path"], task=task)
    with clock.stage("latency" + (" + int8" if opts.quantize else "")):
        measured["speed"] = speed_stage(teacher, example, slim_files["onnx_path"], data, out, opts, config.goal,
                                        config.cost_batch, quantize_from=slim_files["uncompacted"])
        if slim_files["uncompacted"]:
            os.remove(slim_files["uncompacted"])
    report = build_report(opts, options, method, teacher_info, data, plan, metrics, slim_files, measured)
    report["data"].update(data_summary(data), max_length=inputs.length)
    report["model"]["notes"] = inputs.notes
    report["warnings"] = result_warnings(report, data)
    return finish(report, history, out, opts, method, clock)


def finish(report: dict, history: list, out: str, opts, method, clock: Clock) -> dict:
    """Metadata into model.onnx, plots, report.json (the run is complete), then the checkpoint cleanup."""
    onnx_path = report["onnx"]["path"]
    report["onnx"]["metadata"] = write_run_metadata(onnx_path, report, os.path.join(out, "tokenizer"))
    report["onnx"]["size_bytes"] = os.path.getsize(onnx_path)
    with clock.stage("plots"):
        report["plots"] = write_plots(report, history, out, method.log_keys)
    report["timing"] = clock.total()
    report["disk"] = disk_report(out, opts.keep_checkpoints)
    write_json(os.path.join(out, "report.json"), report)
    if not opts.keep_checkpoints:
        remove_checkpoints(out)
    print(summary_table(report), flush=True)  # always: --quiet drops progress, not the result
    for warning in report["warnings"]:
        print(f"leap-fx: WARNING: {warning}", file=sys.stderr, flush=True)
    return report
