"""The table of ``bench/accuracy.py`` results, from one or more of its JSON files.

    python -m bench.accuracy_table bench/results/accuracy.json [more.json ...] [--markdown]

``bench/accuracy.py`` prints the same table after a run; this re-prints it from the files without
re-running anything (``--markdown``: the README's form). Rows are merged across files (the same row
in two files must have the same settings) and ordered dense first, then by target density, high to low.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from leap_fx.run.summary import format_table

COLUMNS = [("row", "row", ""), ("target", "target", ".2f"), ("density", "achieved density", ".3f"),
           ("val_acc", "val acc", ".4f"), ("test_acc", "test acc (ORT)", ".4f"),
           ("params_fraction", "params kept", ".3f"), ("flops_fraction", "encoder FLOPs", ".3f"),
           ("speedup", "ORT speedup, batch 32", ""), ("onnx_file", "ONNX file", ""), ("minutes", "min", ".1f")]


def table(rows: list[dict], current=None, markdown: bool = False) -> str:
    """Completed rows; a row not in ``current`` (run with other settings) is marked ``*``."""
    shown = []
    for r in rows:
        if r.get("status") != "complete":
            continue
        sp = r.get("onnx_speedup")
        mark = "" if current is None or r["row"] in current else " *"
        size = r.get("onnx_fraction")
        shown.append({**r, "row": r["row"] + mark, "minutes": (r.get("wall_s") or 0) / 60,
                      "onnx_file": "-" if size is None else f"{size:.3f}",
                      "speedup": f"{sp['speedup']:.2f}x (ideal {sp['ideal']:.2f}x)" if sp else "-"})
    text = format_table(shown, COLUMNS, markdown=markdown)
    if any(s["row"].endswith(" *") for s in shown):
        text += "\n* kept from an earlier run with other settings (see 'settings' in the JSON)"
    return text


def merged_rows(paths) -> list[dict]:
    """Rows of all ``paths``: dense first, then target density high to low, file order within one."""
    rows, seen = [], {}
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        if doc.get("benchmark") != "accuracy":
            raise ValueError(f"{path}: not a bench/accuracy.py result (benchmark={doc.get('benchmark')!r})")
        for r in doc.get("rows", []):
            if r["row"] in seen:
                if seen[r["row"]][1].get("settings") != r.get("settings"):
                    raise ValueError(f"row {r['row']!r} is in {seen[r['row']][0]} and {path} "
                                     "with different settings")
                continue
            seen[r["row"]] = (path, r)
            rows.append(r)
    return sorted(rows, key=lambda r: (r.get("method") != "dense", -float(r.get("target", 1.0))))  # stable


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="JSON files written by bench/accuracy.py")
    p.add_argument("--markdown", action="store_true", help="GitHub markdown table (the README's form)")
    args = p.parse_args(argv)
    missing = [path for path in args.paths if not os.path.isfile(path)]
    if missing:
        raise ValueError(f"no such file: {', '.join(missing)} (run bench/accuracy.py first)")
    text = table(merged_rows(args.paths), markdown=args.markdown)
    print(text)
    return text


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        sys.exit(f"bench/accuracy_table.py: error: {err}")
