"""Speed, size and accuracy: every method, at FLOPs targets (structure) and density targets (sparsity),
fp32 and int8.

    python -m bench.pareto [--targets flops:0.5,flops:0.25,density:0.1] [--rows 'leap-*']
                           [--quick] [--work-dir /tmp/leap-fx-pareto] [--out bench/results/pareto.json]

Rows: ``dense`` (the fine-tuned teacher, and its int8 copy) and ``<method>-<granularity>-<target>`` for
every registered method whose bench granularity gives a structured config (``MaskSpec.structured``:
whole heads and neurons, so strip really shrinks the graph); today LEAP ``structured`` and
``l2-oneshot``, and a method registered later (Kwon, CoFi) joins by existing. A ``density:`` target
gives rows for the unstructured methods (``SPARSE_METHODS``: SparseBERT and its magnitude baseline),
whose gain is the file (stored compactly, ``passes/export/sparse.py``), not the speed. Every row is one
``run_prune`` job (full mode unless ``--quick``) from one shared dense teacher (``bench.accuracy.Bench``)
with ``quantize="int8"``; test accuracy is the exported model's in onnxruntime. Then dense / slim /
slim-int8 graphs are timed in onnxruntime, interleaved, at batch 32 and sequence 128 (``TIMING``,
2 threads, test-like inputs). Writes the JSON (``--out``), ``pareto.png`` beside it (accuracy vs
speedup, one line per method, dashed = int8, the dense point marked) and prints a README table.
Resumable per row: rows already in ``--out`` with the same settings are skipped (``--fresh`` re-runs).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Optional

import torch

from bench._rows import add_row_args, exit_with, ordered, previous_rows, run_rows
from bench.accuracy import Bench, bench_granularities, dense_row, pruned_row, select
from leap_fx.costs.timing import (
    ORT_SETTINGS,
    environment,
    inputs_at,
    machine_load,
    onnx_latency,
    split_inputs_at,
)
from leap_fx.methods import config_class
from leap_fx.methods.registry import config_names as pruning_methods
from leap_fx.run.plots import _save, plt
from leap_fx.run.speed import quantized_result
from leap_fx.run.summary import format_table
from leap_fx.spec.target import Target
from passes.io import read_json, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ("flops:0.7", "flops:0.5", "flops:0.35", "flops:0.25", "density:0.1", "density:0.05")
SPARSE_METHODS = ("sparsebert", "magnitude")  # the rows of a density target (unstructured)
TIMING = {"batch": 32, "seq": 128}  # defaults of --timing-batch / --timing-seq
TIMING_REPS = {"quick": (1, 5), "full": (2, 20)}  # (warmup, repetitions)
COLUMNS = [("row", "row", ""), ("target", "target", ""), ("flops", "encoder FLOPs", ".3f"),
           ("test", "test acc (ORT)", ".4f"), ("drop", "drop pt", "+.2f"), ("speedup", "speedup b32 s128", ".2f"),
           ("int8_test", "int8 test acc", ".4f"), ("int8_drop", "int8 drop pt", "+.2f"),
           ("int8_speedup", "int8 speedup", ".2f"), ("agreement", "int8 agreement", ".3f"),
           ("file", "file x dense", ".3f"), ("int8_file", "int8 file x dense", ".3f")]


@dataclass(frozen=True)
class ParetoRow:
    name: str
    method: str              # dense | a registered pruning method
    granularity: str = "-"
    target: str = "-"
    density: Optional[float] = None  # read by Bench.options: the target decides


def structured_methods() -> list[tuple[str, str]]:
    """``(method, granularity)`` of every registered method whose bench granularity is structured."""
    out = []
    for m in pruning_methods():
        for g in bench_granularities(m):
            try:
                if config_class(m)(target="flops:0.5", granularity=g).structured:
                    out.append((m, g))
            except (ValueError, TypeError):  # the config refuses a FLOPs target at this granularity
                continue
    return out


def sparse_methods() -> list[tuple[str, str]]:
    """``(method, "unstructured")`` of the registered ``SPARSE_METHODS``."""
    return [(m, "unstructured") for m in SPARSE_METHODS if m in pruning_methods()]


def all_rows(targets) -> list[ParetoRow]:
    rows = [ParetoRow("dense", "dense")]
    for t in map(Target.parse, targets):
        methods = sparse_methods() if t.unit == "density" else structured_methods()
        rows += [ParetoRow(f"{m}-{g}-{t.unit}{t.value:g}", m, g, str(t)) for m, g in methods]
    return rows


class ParetoBench(Bench):
    """``bench.accuracy.Bench`` with a target in any unit and int8 on every row."""

    def options(self, row, **kw):
        return super().options(row, **({} if row.method == "dense" else {"target": row.target}),
                               quantize="int8", **kw)

    @property
    def timing(self) -> dict:
        return {"batch": self.args.timing_batch, "seq": self.args.timing_seq}

    def settings(self, row) -> dict:
        return {**super().settings(row), "timing": self.timing}


def time_graphs(bench: ParetoBench, paths: dict) -> dict:
    """Interleaved onnxruntime latency of ``paths`` (dense first) at the bench's timing batch and sequence."""
    inputs = inputs_at(split_inputs_at(bench.data.test, 2), bench.timing["batch"], bench.timing["seq"])
    warmup, reps = TIMING_REPS[bench.mode]
    t = onnx_latency(paths, inputs, reps, warmup, ORT_SETTINGS["intra_op_num_threads"], desc="pareto timing")
    t.pop("samples_ms")
    return t


def run_row(bench: ParetoBench, row: ParetoRow) -> dict:
    """One row: the job (or the dense teacher), its int8 copy, and the interleaved timing."""
    if row.method == "dense":
        res = dense_row(bench, row)
        path = bench.dense_onnx()[0]
        int8 = quantized_result(path, bench.data, os.path.dirname(path))
        res.update(target="-", test_fp32=res["test_acc"])
    else:
        res = pruned_row(bench, row)
        rep = read_json(res["report"], "report")
        int8, res["target_result"] = rep["quantized"], rep["target"]
    paths = {"dense": bench.dense_onnx()[0], "slim": res["onnx"]} if row.method != "dense" else \
        {"dense": bench.dense_onnx()[0]}
    if int8["status"] == "ok":
        paths["int8"] = int8["path"]
    res.update(int8=int8, timing=time_graphs(bench, paths))
    return {"row": row.name, "method": row.method, "granularity": row.granularity, "status": "complete",
            **res, "target": row.target, "settings": bench.settings(row)}


def table_rows(rows: list[dict]) -> list[dict]:
    """The README table's cells from complete result rows (dense test accuracy = the reference)."""
    dense = next((r for r in rows if r["row"] == "dense" and r.get("status") == "complete"), None)
    ref = dense["test_acc"] if dense else float("nan")
    dense_bytes = dense["onnx_bytes"] if dense else float("nan")
    out = []
    for r in rows:
        if r.get("status") != "complete":
            continue
        sp, q = r["timing"]["speedup"], r["int8"]
        ok = q["status"] == "ok"
        out.append({"row": r["row"], "target": r["target"], "flops": r.get("flops_fraction", 1.0), "test": r["test_acc"],
                    "drop": 100 * (r["test_acc"] - ref), "speedup": sp.get("slim", {"median": 1.0})["median"],
                    "int8_test": q["test"] if ok else "rejected", "int8_drop": 100 * (q["test"] - ref) if ok else
                    "-", "int8_speedup": sp["int8"]["median"] if ok else "-",
                    "agreement": q["agreement"], "file": r["onnx_bytes"] / dense_bytes,
                    "int8_file": q["size_bytes"] / dense_bytes if ok else "-"})
    return out


def plot(rows: list[dict], path: str, timing: dict = TIMING) -> str:
    """Accuracy vs measured speedup, one line per method (dashed: int8), the dense point marked."""
    cells = {r["row"]: r for r in table_rows(rows)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, method in enumerate(sorted({r["method"] for r in rows if r["method"] != "dense"})):
        mine = sorted((cells[r["row"]] for r in rows if r["method"] == method and r["row"] in cells),
                      key=lambda c: c["speedup"])
        color = f"C{i}"
        ax.plot([c["speedup"] for c in mine], [c["test"] for c in mine], "o-", color=color, label=method)
        ax.plot([c["int8_speedup"] for c in mine], [c["int8_test"] for c in mine], "s--", color=color,
                label=f"{method} int8")
    if "dense" in cells:
        d = cells["dense"]
        ax.plot([1.0], [d["test"]], "k*", markersize=12, label="dense")
        ax.plot([d["int8_speedup"]], [d["int8_test"]], "kx", markersize=9, label="dense int8")
    ax.set_xlabel(f"onnxruntime speedup over dense (batch {timing['batch']}, seq {timing['seq']})")
    ax.set_ylabel("test accuracy (onnxruntime)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", type=lambda t: [str(Target.parse(x)) for x in t.split(",") if x.strip()],
                   default=list(TARGETS), help="comma-separated targets (default: " + ",".join(TARGETS) + ")")
    p.add_argument("--quick", action="store_true", help="the job's quick mode and fewer timing rounds (smoke)")
    p.add_argument("--timing-batch", type=int, default=TIMING["batch"], help="onnxruntime timing batch (32)")
    p.add_argument("--timing-seq", type=int, default=TIMING["seq"], help="onnxruntime timing sequence length (128)")
    add_row_args(p, "pareto", ROOT)
    return p.parse_args(argv)


def main(argv=None, model=None, tokenizer=None, overrides=None) -> dict:
    """Run the selected rows; ``model``/``tokenizer``/``overrides`` (PruneOptions fields) are for tests."""
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    every = all_rows(args.targets)
    rows = select(every, [p.strip() for p in (args.rows or "").split(",") if p.strip()])
    bench, load_before = ParetoBench(args, model, tokenizer, overrides), machine_load()
    result = {}

    def save(results):
        result.clear()
        result.update({"benchmark": "pareto", "pipeline": "leap_fx.run.run_prune (quantize int8) per row, shared "
                       "dense teacher; onnxruntime timing interleaved",
                       "timing": {**bench.timing, "reps": TIMING_REPS[bench.mode], "ort": ORT_SETTINGS},
                       "settings": {"mode": bench.mode, "targets": args.targets, "seed": args.seed,
                                    "max_length": bench.base.max_length, "data_sizes": {n: len(s) for n, s in
                                                                                        bench.data.items()},
                                    "methods": structured_methods(), "work_dir": os.path.abspath(args.work_dir)},
                       "rows": ordered(results, [r.name for r in every]), "env": environment(),
                       "machine_load": {"before": load_before, "after": machine_load()}})
        write_json(args.out, result)

    done = previous_rows(args.out, rows, args.fresh)
    results = run_rows(rows, done, bench.settings, lambda row: run_row(bench, row), save, "pareto", args.out)
    if not result:
        save(results)
    result["plot"] = plot(result["rows"], os.path.join(os.path.dirname(os.path.abspath(args.out)), "pareto.png"),
                          bench.timing)
    print(format_table(table_rows(result["rows"]), COLUMNS, markdown=True))
    print(f"wrote {args.out} and {result['plot']}")
    return result


if __name__ == "__main__":
    exit_with(main, "pareto.py")
