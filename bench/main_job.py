"""Wall time and results of the README's main job, `leap-fx prune`, as a fresh machine runs it.

    python -m bench.main_job [--modes quick,full] [--work-dir /tmp/leap-fx-main-job]
                             [--out bench/results/main_job.json] [--prune-args '...']

Each mode is one ``python -m leap_fx prune`` process with ``--no-cache`` (the dense teacher is
fine-tuned inside the timing, as on a fresh machine) and ``--overwrite``, timed from the outside
(interpreter start and imports included). The budgets are the issue's: ``--quick`` 5 min, the full
job 30 min on 2 CPU cores. Run it alone on the machine: other load stretches every number here.
``--prune-args`` appends options to every job (tests use it to run a tiny model).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from leap_fx.costs.timing import environment, machine_load
from leap_fx.run.measure import live_of_total
from leap_fx.run.summary import format_table
from passes.io import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BUDGET_S = {"quick": 300.0, "full": 1800.0}
MODE_ARGS = {"quick": ["--quick"], "full": []}
COLUMNS = [("mode", "mode", ""), ("wall_min", "wall min", ".1f"), ("budget_min", "budget min", ".0f"),
           ("teacher_min", "teacher min", ".1f"), ("prune_min", "prune min", ".1f"),
           ("train_examples", "train snippets", "d"), ("density", "density", ".3f"),
           ("goal", "target", ""), ("flops", "encoder FLOPs", ".3f"),
           ("dense_test", "dense test", ".4f"), ("pruned_test", "pruned test (ORT)", ".4f"),
           ("test_change", "test change, 95 % CI", ""), ("validation_change", "validation change, 95 % CI", ""),
           ("heads", "heads kept", ""), ("speedup_b1", "ORT speedup b1", ".2f"),
           ("speedup_b32", "ORT speedup b32", ".2f"), ("slim_mb", "slim MB", ".1f"), ("parity", "parity", ".1e")]


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in BUDGET_S]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"{text!r}: pass modes from {', '.join(BUDGET_S)}, e.g. quick,full")
    return modes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", type=_modes, default=["quick", "full"], help="quick,full (default: both)")
    p.add_argument("--work-dir", default="/tmp/leap-fx-main-job", help="one run directory per mode")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "main_job.json"))
    p.add_argument("--prune-args", default="", help="extra `leap-fx prune` options for every job")
    return p.parse_args(argv)


def _stage(stages: dict, prefix: str) -> float:
    return sum(v for k, v in stages.items() if k.startswith(prefix))


def summarize(report: dict) -> dict:
    """The numbers of one finished job's ``report.json`` that the table shows."""
    stages = report["timing"]["stages_s"]
    return {"status": "complete", "report_total_s": report["timing"]["total_s"], "stages_s": stages,
            "teacher_s": _stage(stages, "dense teacher"), "prune_s": _stage(stages, "train"),
            "train_examples": report["data"]["train"], "steps": report["train"]["steps"],
            "target": report["density"]["target"], "density": report["density"]["achieved"],
            "dense_test": report["accuracy"]["dense"]["test"], "pruned_test": report["accuracy"]["pruned"]["test"],
            "majority_test": report["data"]["majority_test"],
            **{f"{split}_change": _change(report, split) for split in ("validation", "test")}, "heads": live_of_total(report["structure"]["heads"]),
            "parity": report["onnx"]["parity_max_abs_diff"], "granularity": report["resolved_options"]["granularity"],
            "goal": (report.get("target") or {}).get("target", "-"), "flops": report["flops"]["slim_fraction"],
            "speedup_b32": _speedup(report, "b32"), "speedup_b1": _speedup(report, "b1"),
            "slim_mb": (report.get("files") or {}).get("slim_bytes", float("nan")) / 1e6}


def _change(report: dict, split: str) -> str:
    """Pruned - dense on ``split`` in points with the paired bootstrap interval (``-`` before it was measured)."""
    d = report["accuracy"]["pruned"].get("delta", {}).get(split)
    return f"{d['delta_pt']:+.1f} [{d['low_pt']:+.1f}, {d['high_pt']:+.1f}]" if d else "-"


def _speedup(report: dict, batch: str) -> float:
    """The run's own dense/slim onnxruntime speedup at ``batch`` (nan if it was not measured)."""
    t = (report.get("latency") or {}).get("batches", {}).get(batch)
    return t["speedup"]["slim"]["median"] if t else float("nan")


def run_mode(mode: str, args) -> dict:
    out = os.path.join(args.work_dir, mode)
    cmd = [sys.executable, "-m", "leap_fx", "prune", "--out", out, "--no-cache", "--overwrite", "--quiet",
           *MODE_ARGS[mode], *shlex.split(args.prune_args)]
    env = dict(os.environ)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)  # the installed leap_fx
    wall = time.perf_counter() - t0
    base = {"mode": mode, "command": shlex.join(["leap-fx", *cmd[3:]]), "wall_s": round(wall, 1),
            "budget_s": BUDGET_S[mode], "within_budget": wall <= BUDGET_S[mode]}
    report_path = os.path.join(out, "report.json")
    if res.returncode != 0 or not os.path.isfile(report_path):
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return {**base, "status": "failed", "returncode": res.returncode, "error": " | ".join(tail)}
    with open(report_path) as fh:
        return {**base, **summarize(json.load(fh))}


def table(rows: list[dict]) -> str:
    done = [{**r, "wall_min": r["wall_s"] / 60, "budget_min": r["budget_s"] / 60,
             "teacher_min": r["teacher_s"] / 60, "prune_min": r["prune_s"] / 60}
            for r in rows if r["status"] == "complete"]
    return format_table(done, COLUMNS)


def main(argv=None) -> dict:
    args = parse_args(argv)
    load_before = machine_load()
    rows = []
    for mode in args.modes:
        print(f"[main_job] {mode}: running `leap-fx prune` (no teacher cache) ...", flush=True)
        row = run_mode(mode, args)
        rows.append(row)
        state = (f"{row['wall_s'] / 60:.1f} min (budget {BUDGET_S[mode] / 60:.0f})" if row["status"] == "complete"
                 else f"FAILED (exit {row['returncode']}): {row['error']}")
        print(f"[main_job] {mode}: {state}", flush=True)
    result = {"benchmark": "main_job", "rows": rows, "env": environment(),
              "machine_load": {"before": load_before, "after": machine_load()}}
    write_json(args.out, result)
    print(table(rows))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    res = main()
    sys.exit(0 if all(r["status"] == "complete" and r["within_budget"] for r in res["rows"]) else 1)
