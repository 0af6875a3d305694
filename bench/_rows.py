"""The resumable row loop shared by bench/accuracy.py and bench/pareto.py.

A row already in the previous result file with ``status == "complete"`` and the same settings is
skipped; a row that raises (bad settings, a failed export, NaN) is recorded as failed and the others
still run; the result file is written after every row, so a killed bench continues where it stopped.
"""
from __future__ import annotations

import json
import os
from typing import Callable

from tqdm.auto import tqdm


def load_previous(path: str) -> dict:
    """``{row name: row}`` of a previous result file (empty if there is none)."""
    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return {r["row"]: r for r in json.load(fh).get("rows", [])}


def ordered(results: dict, order: list[str]) -> list[dict]:
    """Rows in ``order`` (names not in it last, by name)."""
    return sorted(results.values(), key=lambda r: (order.index(r["row"]) if r["row"] in order else len(order),
                                                   r["row"]))


def run_rows(rows, done: dict, settings: Callable, run: Callable, save: Callable, tag: str, out: str) -> dict:
    """Run every row not ``done`` with the same ``settings(row)``; ``save(results)`` after each."""
    results = dict(done)
    for row in tqdm(rows, desc="rows", unit="row"):
        old = done.get(row.name)
        if old and old.get("status") == "complete" and old.get("settings") == settings(row):
            tqdm.write(f"[{tag}] {row.name}: already in {out} with the same settings, skipped")
            continue
        tqdm.write(f"[{tag}] {row.name}: running")
        try:
            results[row.name] = run(row)
        except (RuntimeError, ArithmeticError, ValueError) as err:  # record it, run the other rows
            results[row.name] = {"row": row.name, "status": "failed", "error": f"{type(err).__name__}: {err}",
                                 "settings": settings(row)}
            tqdm.write(f"[{tag}] {row.name}: FAILED {type(err).__name__}: {err}")
        save(results)
    return results
