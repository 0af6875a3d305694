"""Soak: a `leap-fx prune` run SIGKILLed at random moments and resumed ends exactly where an
uninterrupted run ends, and leaves no stray files (issue 12).

    python -m bench.soak [--cycles 20] [--seed 0] [--work-dir /tmp/leap-fx-soak] [--step-delay 0.03]
                         [--out bench/results/soak.json]

1. Builds a tiny model folder (config-built BERT, word-level tokenizer) and a synthetic CSV, or uses
   ``--model`` / ``--data`` (with ``--text-column`` / ``--label-column``).
2. Runs the job once uninterrupted (the reference; ``--no-cache``: the dense teacher is fine-tuned inside
   the run folder, so kills land in the teacher fine-tune too).
3. ``--cycles`` times: starts the same job (``--resume`` after the first) and SIGKILLs it at a random
   moment: every 4th kill within the startup (imports, checks: before the lock is taken); the others
   once the run's visible progress (history lines, artefacts) reaches a random point of the reference
   run's (ascending over the cycles), plus ``uniform(0, --jitter)`` s, so the kills spread over every
   stage (teacher, pruning, strip, export, report) and the run gets a little further each cycle.
4. A last ``--resume`` runs to the end. Compared with the reference: every tensor of
   ``slim/model.safetensors`` (bit-exact expected: same seeds, checkpointed RNG, one thread), test
   accuracy and density; the run folder's file list equals the reference's (no temp files, no
   ``.leap-fx-previous``).

``--step-delay`` sleeps that long in every training forward (a hook: the arithmetic is unchanged) so a
tiny run lasts long enough for kills to land mid-training. Timings are not the point: not a timed test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Optional

from leap_fx.run.summary import format_table
from passes.io import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPER = """
import os, sys, time
import leap_fx.train.loop as loop
delay, real = float(os.environ["SOAK_STEP_DELAY"]), loop.train
def slow(model, *a, **k):
    model.register_forward_pre_hook(lambda m, args: time.sleep(delay) if m.training else None)
    return real(model, *a, **k)
loop.train = slow
import leap_fx.train as lt
lt.train = slow
from leap_fx.cli import main
sys.exit(main(sys.argv[1:]))
"""
WORDS = {"pos": "good great fine nice superb lovely".split(), "neg": "bad awful poor dull boring ugly".split(),
         "": "movie film plot actor scene the a it was".split()}
COLUMNS = [("cycle", "cycle", "d"), ("phase", "kill at", ""), ("after_s", "after s", ".1f"),
           ("state", "state at kill", ""), ("progress", "progress", "d"), ("ended", "process", "")]


def tiny_setup(folder: str) -> tuple[str, str]:
    """``(model dir, csv path)``: a 2-layer BERT from a config and 200 labelled word-soup reviews."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sum(WORDS.values(), [])
    model_dir, csv_path = os.path.join(folder, "tiny-model"), os.path.join(folder, "reviews.csv")
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.1)).save_pretrained(model_dir)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(model_dir)
    rng = random.Random(0)
    lines = ["text,label"]
    for _ in range(200):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(WORDS[label], 2) + [rng.choice(WORDS[""]) for _ in range(rng.randint(2, 8))]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    with open(csv_path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return model_dir, csv_path


def prune_args(args, model_dir: str, data: str, out: str) -> list[str]:
    return ["prune", "--model", model_dir, "--data", data, "--text-column", args.text_column, "--label-column",
            args.label_column, "--out", out, "--no-cache", "--threads", "1", "--quiet", "--granularity", "hybrid",
            "--mask-block-size", "8", "--target-density", "0.4", "--epochs", str(args.epochs), "--teacher-epochs",
            str(args.teacher_epochs), "--batch-size", "16", "--lr", "1e-3", "--teacher-lr", "3e-3",
            "--continue-anyway",  # the soak tests kill + resume, not the teacher's quality (a 1-epoch teacher)
            *args.extra.split()]


def start(args, argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               SOAK_STEP_DELAY=str(args.step_delay))
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, what: str) -> float:
    t0 = time.perf_counter()
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - t0


def state_of(out: str) -> str:
    """Which stage the run folder shows (for the table)."""
    has = lambda *p: os.path.exists(os.path.join(out, *p))  # noqa: E731
    for name, test in (("complete", has("report.json")), ("exporting", has("slim") or has("model.onnx")),
                       ("pruning", has("train")), ("teacher", has("teacher")), ("prepared", has("options.json"))):
        if test:
            return name
    return "starting"


def holds_lock(proc: subprocess.Popen, out: str) -> bool:
    """Whether this process holds ``OUT/.leap-fx.lock`` (its checks passed, --out is being written)."""
    try:
        with open(os.path.join(out, ".leap-fx.lock")) as fh:
            return fh.read().startswith(f"pid {proc.pid},")
    except OSError:
        return False


def wait_for_lock(proc: subprocess.Popen, out: str) -> bool:
    while proc.poll() is None:
        if holds_lock(proc, out):
            return True
        time.sleep(0.01)
    return False


ARTEFACTS = ("slim", "model.onnx", "tokenizer", "density.png", "report.json")


def _lines(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except OSError:
        return 0


def progress(out: str) -> int:
    """How far the run is, as an outsider sees it: history lines (the teacher's weigh 5: it logs few) and
    artefacts written (5 each). A resumed run drops the history after its checkpoint, so this can fall."""
    teacher, student = (_lines(os.path.join(out, d, "history.jsonl")) for d in ("teacher", "train"))
    return (5 * teacher + student
            + 5 * sum(os.path.exists(os.path.join(out, n)) for n in ARTEFACTS))


def kill_cycle(args, argv: list[str], out: str, rng: random.Random, timing: dict, cycle: int,
               target: Optional[int]) -> dict:
    """Start the job, SIGKILL it at a random moment, return what happened.

    ``target`` None: the kill lands in ``[0, startup]`` after the process starts (imports, checks). Else
    the run is killed once its ``progress`` reaches ``target`` (a random point of the reference run's
    progress; the targets of the cycles ascend), plus ``uniform(0, --jitter)`` s: the kills spread over
    every stage (teacher, pruning, strip, export, report) and each cycle gets a little further."""
    proc, t0 = start(args, argv), time.perf_counter()
    if target is None:  # killed during startup: at the drawn time, or as the lock is taken if sooner
        at = rng.uniform(0.0, timing["startup_s"])
        while time.perf_counter() - t0 < at and proc.poll() is None and not holds_lock(proc, out):
            time.sleep(0.01)
        at = 0.0
    else:
        wait_for_lock(proc, out)
        while progress(out) < target and proc.poll() is None:
            time.sleep(0.01)
        at = rng.uniform(0.0, args.jitter)
    t1 = time.perf_counter()
    while time.perf_counter() - t1 < at and proc.poll() is None:
        time.sleep(0.01)
    state, reached = state_of(out), progress(out)
    ended = "finished" if proc.poll() is not None else "killed"
    if ended == "killed":
        proc.send_signal(signal.SIGKILL)
    proc.communicate()
    if ended == "finished" and proc.returncode != 0:
        raise SystemExit(f"cycle {cycle}: the run failed on its own (exit {proc.returncode})")
    return {"cycle": cycle, "phase": "process start" if target is None else f"progress {target}",
            "after_s": time.perf_counter() - t0, "state": state, "progress": reached, "ended": ended}


def reference(args, argv: list[str], out: str) -> dict:
    """The uninterrupted run: its time to the lock (startup) and from the lock to the end (work)."""
    proc, t0 = start(args, argv), time.perf_counter()
    wait_for_lock(proc, out)
    t1 = time.perf_counter()
    finish(proc, "the reference run")
    return {"startup_s": t1 - t0, "work_s": time.perf_counter() - t1, "progress": progress(out)}


def listing(out: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, f), out) for r, ds, fs in os.walk(out) for f in fs + ds)


def compare(ref: str, got: str) -> dict:
    from safetensors.torch import load_file
    a, b = (load_file(os.path.join(d, "slim", "model.safetensors")) for d in (ref, got))
    diffs = {k: float((a[k] - b[k]).abs().max()) if a[k].shape == b[k].shape else float("inf") for k in a}
    ra, rb = (json.load(open(os.path.join(d, "report.json"))) for d in (ref, got))
    stray = sorted(set(listing(got)) ^ set(listing(ref)))
    return {"tensors": len(a), "same_tensor_names": sorted(a) == sorted(b),
            "max_abs_weight_diff": max(diffs.values()) if diffs else None,
            "bit_exact": sorted(a) == sorted(b) and all(v == 0.0 for v in diffs.values()),
            "test_acc": [ra["accuracy"]["pruned"]["test"], rb["accuracy"]["pruned"]["test"]],
            "density": [ra["density"]["achieved"], rb["density"]["achieved"]],
            "stray_files": stray, "files": len(listing(got))}


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=20, help="kill + resume cycles (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default: 0)")
    p.add_argument("--work-dir", default="/tmp/leap-fx-soak", help="scratch folder (replaced)")
    p.add_argument("--model", help="model folder (default: a tiny config-built BERT)")
    p.add_argument("--data", help="data file (default: a synthetic CSV)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--teacher-epochs", type=float, default=3.0)
    p.add_argument("--step-delay", type=float, default=0.03, help="seconds slept per training forward")
    p.add_argument("--jitter", type=float, default=0.5, help="kills land up to this many seconds after the "
                                                            "awaited progress (default: 0.5)")
    p.add_argument("--extra", default="", help="more `leap-fx prune` options, one string")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak.json"))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import shutil
    args = parse(argv)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    model_dir, data = (args.model, args.data) if args.model else tiny_setup(args.work_dir)
    ref, out = os.path.join(args.work_dir, "reference"), os.path.join(args.work_dir, "soaked")
    timing = reference(args, prune_args(args, model_dir, data, ref), ref)
    print(f"reference run: {timing['startup_s']:.1f} s to the lock, {timing['work_s']:.1f} s of work", flush=True)
    rng, rows = random.Random(args.seed), []
    at_start = [cycle % 4 == 0 for cycle in range(1, args.cycles + 1)]  # every 4th: during startup
    targets = iter(sorted(rng.randint(0, timing["progress"] - 1) for _ in range(args.cycles - sum(at_start))))
    for cycle, early in enumerate(at_start, 1):
        argv = prune_args(args, model_dir, data, out) + (["--resume"] if cycle > 1 else [])
        rows.append(kill_cycle(args, argv, out, rng, timing, cycle, None if early else next(targets)))
        print(format_table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    final_s = finish(start(args, prune_args(args, model_dir, data, out) + ["--resume"]), "the final --resume")
    result = {"benchmark": "soak", "cycles": args.cycles, "seed": args.seed,
              "reference": {k: round(v, 1) for k, v in timing.items()},
              "final_resume_s": round(final_s, 1), "killed": sum(r["ended"] == "killed" for r in rows),
              "kills_by_state": {s: sum(r["state"] == s and r["ended"] == "killed" for r in rows)
                                 for s in sorted({r["state"] for r in rows})},
              "compare": compare(ref, out), "rows": rows, "argv": prune_args(args, model_dir, data, "OUT")}
    ok = result["compare"]["bit_exact"] and not result["compare"]["stray_files"]
    result["verdict"] = "PASS" if ok else "FAIL"
    print(format_table(rows, COLUMNS))
    print(json.dumps({k: result[k] for k in ("killed", "kills_by_state", "compare", "verdict")}, indent=2))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["verdict"] == "PASS" else 1)
