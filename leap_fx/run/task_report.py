"""report.json and the console summary of a task job (``task_job.py``): the task's metric for the dense
teacher and the pruned model (onnxruntime on validation and test, PyTorch on validation), the target and
what was achieved, heads / neurons kept, parameters and FLOPs, the ONNX file, and the warnings a result
earns (target missed, nothing removed, a teacher no better than guessing)."""
from __future__ import annotations

import os

from leap_fx.run.measure import kept_structure, live_of_total
from passes.measure import count_flops, count_params

__all__ = ["task_report", "task_summary", "task_warnings"]


def _flops(teacher, slim, plan, flop_input: dict) -> dict:
    dense, pruned = count_flops(teacher, flop_input, plan), count_flops(slim, flop_input, plan)
    return {"batch": 1, "inputs": {k: list(v.shape) for k, v in flop_input.items()},
            "dense_encoder": dense["encoder"], "slim_encoder": pruned["encoder"], "dense_total": dense["total"],
            "slim_total": pruned["total"], "slim_fraction": pruned["encoder"] / max(1, dense["encoder"])}


def task_report(task, opts, options, pruner, folder, data, splits, teacher, teacher_info: dict, slim, plan,
                flop_input: dict, stripped, export, pruned: dict, metrics: dict, settings: dict) -> dict:
    """The report dict of a finished task run."""
    method = pruner.method
    params = {"dense": count_params(teacher), "slim": count_params(slim)}
    report = {
        "status": "complete", "task": task.name, "metric": task.config.metric,
        "options": options.to_dict(), "resolved_options": {**opts.to_dict(), "max_length": settings.get("max_length")},
        "method": {"name": method.name, "kind": method.kind, "log_keys": list(method.log_keys)},
        "method_config": pruner.config.to_dict(), "train_config": pruner.train_config.to_dict(),
        "mask_lr": method.mask_lr() if method.kind == "trained" and method.uses_masks else None,
        "teacher": teacher_info,
        "model": {"source": folder or "injected (run_prune(model=...))", "plan": plan.to_dict()},
        "data": {"source": data.source, "label_names": data.label_names, "settings": settings,
                 **{name: len(split) for name, split in splits.items()},
                 "windows" if task.name == "question-answering" else "features":
                     {name: split.features for name, split in splits.items()},
                 "files": {name: rows.source for name, rows in data.splits.items()}},
        "metrics": {"dense": teacher_info["metrics"], "pruned": pruned},
        "target": metrics.get("target"),
        "structure": kept_structure(stripped, plan),
        "parameters": {**params, "slim_fraction": params["slim"] / params["dense"]},
        "flops": _flops(teacher, slim, plan, flop_input),
        "onnx": {"path": export.path, "inputs": list(export.input_names), "outputs": list(task.output_names),
                 "parity_max_abs_diff": max(export.max_abs_diff.values()), "parity": export.max_abs_diff,
                 "notes": list(export.notes)},
        "strip": stripped.table(),
        "train": {"steps": metrics.get("step"), "calibration": metrics.get("calibration"),
                  "history": os.path.join(os.path.dirname(export.path), "train", "history.jsonl")},
    }
    report["warnings"] = task_warnings(report, pruner.config.structured)
    return report


def task_warnings(report: dict, structured: bool) -> list[str]:
    """Loud warnings for a useless result (module docstring)."""
    out, metric = [], report["metric"]
    target = report.get("target") or {}
    if target.get("warning"):
        out.append(target["warning"])
    params = report["parameters"]
    if structured and params["slim"] >= params["dense"]:
        out.append("strip removed nothing: no head or neuron was pruned away (see the target above)")
    dense = (report["metrics"]["dense"].get("validation") or {})
    value, majority = dense.get(metric), dense.get("majority")
    if value is not None and majority is not None and value <= majority + 0.02:
        out.append(f"the dense teacher's validation {metric} {value:.3f} is not above the majority-class rate "
                   f"{majority:.3f}: this result is no better than guessing; try more --teacher-epochs")
    elif value is not None and majority is None and value <= 0.0:
        out.append(f"the dense teacher's validation {metric} is 0: it learned nothing; try more --teacher-epochs "
                   f"or a higher --teacher-lr")
    return out


def _metric(block: dict, metric: str) -> str:
    v = (block or {}).get(metric)
    return "-" if v is None else f"{v:.4f}"


def task_summary(report: dict) -> str:
    """A readable multi-line summary (what ``leap-fx prune`` prints at the end of a task run)."""
    m, metric = report["metrics"], report["metric"]
    opts, target, fl = report["resolved_options"], report.get("target") or {}, report["flops"]
    st, par, onnx = report["structure"], report["parameters"], report["onnx"]
    rows = [
        ("task / metric", f"{report['task']} / {metric}"),
        ("method / granularity", f"{opts.get('method')} / {opts.get('granularity')}"),
        ("target", f"{target.get('target')}  (achieved {target.get('achieved', float('nan')):.4f})"),
        ("data", f"{report['data']['source']}: train {report['data'].get('train')}, validation "
                 f"{report['data'].get('validation')}, test {report['data'].get('test')} rows"),
        (f"validation {metric} dense -> pruned", f"{_metric(m['dense'].get('validation'), metric)} -> "
                                                 f"{_metric(m['pruned'].get('validation'), metric)}"),
        (f"test {metric} dense -> pruned (ORT)", f"{_metric(m['dense'].get('test'), metric)} -> "
                                                 f"{_metric(m['pruned'].get('test'), metric)}"),
        ("heads kept", live_of_total(st.get("heads", []))),
        ("neurons kept", live_of_total(st.get("neurons", []))),
        ("parameters dense -> slim", f"{par['dense']} -> {par['slim']}"),
        ("encoder FLOPs dense -> slim", f"{fl['dense_encoder']} -> {fl['slim_encoder']} ({fl['slim_fraction']:.3f})"),
        ("ONNX", f"{onnx['path']}  (outputs {', '.join(onnx['outputs'])}, parity {onnx['parity_max_abs_diff']:.2e})"),
        ("wall time", f"{report.get('timing', {}).get('total_s', float('nan')):.1f} s"),
    ]
    rows += [("WARNING", w) for w in report.get("warnings", [])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
