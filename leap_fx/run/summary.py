"""The run's console summary (``summary_table``) and the one table formatter every bench uses."""
from __future__ import annotations

import os

from leap_fx.data.lengths import describe
from leap_fx.run.bootstrap import format_delta
from leap_fx.run.disk import fmt_bytes
from leap_fx.run.measure import live_of_total


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


def _size(onnx: dict) -> str:
    """model.onnx's size on disk (one formatter for every row that shows it), and what compaction saved."""
    size, compact = onnx.get("size_bytes"), onnx.get("compact")
    if size is None:
        return "size -"
    exported = onnx.get("exported_size_bytes")
    saved = f", sparse matrices compacted from {fmt_bytes(exported)}" if compact and exported else ""
    return fmt_bytes(size) + saved


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
        *[(f"{split} change (pruned - dense)", format_delta(pruned["delta"][split]))
          for split in ("validation", "test") if pruned.get("delta")],
        ("heads kept", f"{live_of_total(heads)}  per layer " + " ".join(str(h["live"]) for h in heads)),
        ("neurons kept", f"{live_of_total(neurons)}  per layer " + " ".join(str(n["live"]) for n in neurons)),
        ("parameters dense -> slim", f"{par.get('dense')} -> {par.get('slim')}"),
        ("encoder FLOPs dense -> slim", f"{fl.get('dense_encoder')} -> {fl.get('slim_encoder')}"
                                        f"  ({_fmt(fl.get('slim_fraction'), '.3f')} at seq {fl.get('seq_len')})"),
        ("ONNX", f"{onnx.get('path')}  ({_size(onnx)}, parity {_fmt(onnx.get('parity_max_abs_diff'), '.2e')})"),
        *speed_rows(report),
        ("wall time", f"{_fmt(report.get('timing', {}).get('total_s'), '.1f')} s"
                      f"  (torch threads: {report.get('timing', {}).get('threads', '-')})"),
        ("disk", _disk(report.get("disk"))),
    ]
    rows[3:3] = _data_rows(report.get("data", {}), os.path.dirname(onnx.get("path") or "") or "OUT")
    rows += [("WARNING", w) for w in report.get("warnings", [])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _data_rows(data: dict, out: str) -> list[tuple[str, str]]:
    """Summary rows: rows per split, rows read / skipped per file, the test rows scored when a random subset
    was, the label set, the max length, the data files' warnings and notes."""
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
    test = splits.get("test") or {}
    if test.get("rows_before_subset"):
        rows.insert(1, ("test rows scored", f"{test['rows']} of the test split's {test['rows_before_subset']} (a "
                                            f"random subset: --quick / --max-eval-examples); `leap-fx eval {out} "
                                            f"--all-rows` scores every row"))
    if data.get("max_length"):
        rows.append(("max length", describe(data["max_length"])))
    for kind, key in (("data WARNING", "warnings"), ("data note", "notes")):
        rows += [(kind, m) for m in dict.fromkeys(m for f in files.values() for m in f.get(key, []))]
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
    files = dict(report.get("files") or {})
    if files:
        files["slim_bytes"] = (report.get("onnx") or {}).get("size_bytes") or files.get("slim_bytes")  # with metadata
        sizes = " -> ".join(fmt_bytes(files[k]) for k in ("dense_bytes", "slim_bytes", "int8_bytes") if k in files)
        rows.append(("ONNX size dense -> slim" + (" -> int8" if "int8_bytes" in files else ""), sizes))
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
