"""The resumable row loop shared by bench/accuracy.py and bench/pareto.py.

A row already in the previous result file with ``status == "complete"`` and the same settings is
skipped; a row that raises (bad settings, a failed export, NaN) is recorded as failed and the others
still run; the result file is written after every row, so a killed bench continues where it stopped.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Callable

from tqdm.auto import tqdm


def load_previous(path: str) -> dict:
    """``{row name: row}`` of a previous result file (empty if there is none)."""
    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return {r["row"]: r for r in json.load(fh).get("rows", [])}


def previous_rows(path: str, rows, fresh: bool) -> dict:
    """The rows of ``path`` to keep: all of them, less the selected ``rows`` when ``fresh`` (they are run again;
    the others stay in the file)."""
    done = load_previous(path)
    return {k: v for k, v in done.items() if not (fresh and k in {r.name for r in rows})}


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


def exit_with(main: Callable[[], dict], name: str) -> None:
    """Run a row bench's ``main`` as a script: bad input -> one line naming the fix; exit 1 if a row failed (a
    reference row, such as the language-model bench's dense one, is not a run)."""
    try:
        res = main()
    except ValueError as err:
        sys.exit(f"bench/{name}: error: {err}")
    sys.exit(1 if any(r.get("status") not in ("complete", "reference") for r in res["rows"]) else 0)


def add_row_args(p, name: str, root: str) -> None:
    """The options every row bench shares (rows, epochs, seed, lr, threads, work dir, output, fresh, quiet)."""
    p.add_argument("--rows", help="comma-separated row names or shell patterns (default: all rows)")
    p.add_argument("--epochs", type=float, help="pruning epochs of every row (default: the mode's)")
    p.add_argument("--seed", type=int, default=17, help="training seed of every row (default: 17)")
    p.add_argument("--lr", type=float, help="weights' learning rate of every pruned row (default: each method's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (default: 1)")
    p.add_argument("--work-dir", default=f"/tmp/leap-fx-{name}", help="run directories, one per row")
    p.add_argument("--out", default=os.path.join(root, "bench", "results", f"{name}.json"))
    p.add_argument("--fresh", action="store_true", help="re-run rows even if --out has them")
    p.add_argument("--quiet", action="store_true", help="no per-stage progress of the pipeline")
