"""Training speed at torch thread settings, with and without a competing load (issue 17's threads default).

    python -m bench.threads [--size small] [--loads 0,2] [--settings 1,2,2:passive,auto]
                            [--steps 12] [--rounds 2] [--out bench/results/threads.json]

Each setting is one fresh process (``OMP_WAIT_POLICY`` must be set before OpenMP starts) that times
training steps (forward, backward, AdamW) of a config-built BERT (``--size``: tiny 2x64, small 4x256,
base 6x384 = MiniLM-L6's shape; batch 16, sequence 48) and reports the median seconds per step.
A setting is ``THREADS[:passive]``: THREADS a number or ``auto`` (``leap_fx.env.threads.choose_threads``,
decided in the worker at its start, as the job does: every core with passive waiting, else cores minus
load), ``:passive`` sets ``OMP_WAIT_POLICY=PASSIVE`` (none: libgomp's default, spin then sleep).
``--loads``: numbers of busy-looping processes started beside the workers (the contention of a shared
machine; the machine's own load is recorded too).
Settings run interleaved in ``--rounds`` so slow phases of the machine hit all of them alike.
Prints a table (median s/step, and the slowdown against the best setting of the same load) and
writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from leap_fx.costs.timing import environment, machine_load
from leap_fx.env.threads import choose_threads
from leap_fx.run.summary import format_table
from passes.io import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"tiny": dict(hidden=64, layers=2, heads=2, ffn=256), "small": dict(hidden=256, layers=4, heads=4, ffn=1024),
         "base": dict(hidden=384, layers=6, heads=12, ffn=1536)}
COLUMNS = [("load", "extra load", "d"), ("setting", "setting", ""), ("threads", "threads", "d"),
           ("median_s", "s/step", ".3f"), ("slowdown", "x best", ".2f"), ("loadavg", "loadavg", ".1f")]


def worker(size: str, steps: int, warmup: int, threads: str) -> dict:
    """Time ``steps`` training steps in this process; ``threads``: a number or ``auto``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    n = choose_threads(0)[0] if threads == "auto" else int(threads)
    torch.set_num_threads(n)
    torch.manual_seed(0)
    s = SIZES[size]
    model = BertForSequenceClassification(BertConfig(
        vocab_size=1000, hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        intermediate_size=s["ffn"], max_position_embeddings=64, num_labels=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 1000, (16, 48))
    labels = torch.randint(0, 2, (16,))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"threads": n, "step_s": times, "median_s": statistics.median(times), "loadavg": os.getloadavg()[0]}


def run_setting(setting: str, args) -> dict:
    threads, _, policy = setting.partition(":")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("OMP_NUM_THREADS", None)  # the setting decides
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy.upper()
    cmd = [sys.executable, "-m", "bench.threads", "--worker", "--size", args.size, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", threads]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"worker {setting} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def start_load(n: int) -> list:
    spin = "while True:\n    pass"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]


def stop_load(procs: list) -> None:
    for p in procs:
        p.kill()
        p.wait()


def measure(args) -> list[dict]:
    rows = []
    for load in args.loads:
        procs = start_load(load)
        try:
            time.sleep(args.settle if load else 0)
            samples = {s: [] for s in args.settings}
            for r in range(args.rounds):
                order = args.settings[r % len(args.settings):] + args.settings[:r % len(args.settings)]
                for setting in order:
                    samples[setting].append(run_setting(setting, args))
                    print(f"load {load} round {r + 1}: {setting} {samples[setting][-1]['median_s']:.3f} s/step",
                          file=sys.stderr, flush=True)
        finally:
            stop_load(procs)
        for setting, got in samples.items():
            rows.append({"load": load, "setting": setting, "threads": got[-1]["threads"],
                         "median_s": statistics.median(x for g in got for x in g["step_s"]),
                         "loadavg": statistics.mean(g["loadavg"] for g in got), "runs": got})
    for row in rows:
        best = min(r["median_s"] for r in rows if r["load"] == row["load"])
        row["slowdown"] = row["median_s"] / best
    return rows


def _list(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--loads", type=_list(int), default=[0, 2], help="busy processes beside the workers (0,2)")
    p.add_argument("--settings", type=_list(str), default=["1", "2", "2:passive", "auto", "auto:passive"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settle", type=float, default=10.0, help="seconds the load runs before timing")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "threads.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", default="1", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.size, args.steps, args.warmup, args.threads)))
        return 0
    before = machine_load()
    rows = measure(args)
    print(format_table(rows, COLUMNS))
    write_json(args.out, {"size": args.size, "model": SIZES[args.size], "batch": 16, "seq": 48,
                          "steps": args.steps, "rounds": args.rounds, "rows": rows,
                          "machine_load_before": before, "machine_load_after": machine_load(),
                          "environment": environment()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
