"""Latency measured side by side: interleaved rounds of several runners (dense and slim ONNX graphs),
medians and paired ratios, and what the machine was doing meanwhile. Used by the job's own speed
report and by every bench script (one implementation)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence

from passes.export.inputs import InputSpec, make_inputs
from passes.export.parity import ort_session

# Session settings for timing: 2 intra-op threads, sequential, session-level graph optimizations
# (not the transformers BERT fuser, which assumes one head count everywhere).
ORT_SETTINGS = {"intra_op_num_threads": 2, "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL",
                "graph_optimization_level": "ORT_ENABLE_ALL"}


def timing_session(path: str, level: str = ORT_SETTINGS["graph_optimization_level"], threads: int = 2):
    """The onnxruntime session latencies are measured with (``ORT_SETTINGS``)."""
    return ort_session(path, threads=threads, level=level)


def ort_feed(session, inputs: dict) -> dict:
    """numpy feeds for ``session`` from a dict of tensors (by name, else by position)."""
    names = [i.name for i in session.get_inputs()]
    if set(names) <= set(inputs):
        return {n: inputs[n].numpy() for n in names}
    return {n: v.numpy() for n, v in zip(names, inputs.values())}  # positional fallback


def interleaved_latency(runners: Mapping[str, Callable[[], object]], reps: int, warmup: int,
                        desc: str = "timing") -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every runner ``reps`` times in round-robin, rotating the order each repetition.

    Interleaving means slow phases of a shared machine hit all runners alike; rotating the order
    removes any first-/last-in-round bias. Returns ``(wall, cpu)``: milliseconds per call, per
    runner name, of wall-clock time and of this process's CPU time.
    """
    from tqdm.auto import tqdm

    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for rep in tqdm(range(reps), desc=desc, leave=False, mininterval=1.0, disable=not sys.stderr.isatty()):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            c0, t0 = time.process_time(), time.perf_counter()
            runners[name]()
            wall[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
    return wall, cpu


def split_inputs_at(split, batch: int) -> dict:
    """``batch`` rows of a tokenised split at its full sequence length (rows repeated if it is smaller)."""
    import torch
    feats = {k: v for k, v in split.features.items() if k != "labels"}
    n = next(iter(feats.values())).shape[0]
    idx = torch.arange(batch) % n
    return {k: v[idx].contiguous() for k, v in feats.items()}


def inputs_at(example: dict, batch: int, seq: int) -> dict:
    """Inputs like ``example`` at ``(batch, seq)``: ids redrawn in its range, masks cycled
    (``passes.export.inputs.make_inputs``)."""
    spec = InputSpec.from_example(example)
    return dict(zip(spec.names, make_inputs(spec, batch, seq)))


def onnx_latency(paths: Mapping[str, str], inputs: dict, reps: int, warmup: int, threads: int = 2,
                 base: str = "dense", desc: str = "onnxruntime") -> dict:
    """Interleaved onnxruntime latency of several ONNX files on the same ``inputs`` and thread count:
    medians (``ms``), and per file the speedup over ``base`` (ratio of medians, paired, CPU time)."""
    sessions = {n: timing_session(p, threads=threads) for n, p in paths.items()}
    feeds = {n: ort_feed(s, inputs) for n, s in sessions.items()}
    runners = {n: (lambda s=s, f=feeds[n]: s.run(None, f)) for n, s in sessions.items()}
    wall, cpu = interleaved_latency(runners, reps, warmup, desc=desc)
    first = next(iter(inputs.values()))
    out = {"batch": int(first.shape[0]), "seq": int(first.shape[1]) if first.dim() > 1 else None,
           "threads": threads, "warmup": warmup, "reps": reps, "ms": {n: summarize(wall[n]) for n in paths},
           "speedup": {}, "samples_ms": wall}
    for n in paths:
        if n != base and base in paths:
            out["speedup"][n] = {"median": out["ms"][base]["median"] / out["ms"][n]["median"],
                                 "paired": paired_ratio_median(wall[base], wall[n]),
                                 "cpu": summarize(cpu[base])["median"] / summarize(cpu[n])["median"]}
    return out


def summarize(ms: Sequence[float]) -> dict:
    """Median and inter-quartile range (q1, q3, iqr) of a latency sample in milliseconds."""
    if len(ms) < 2:
        v = float(ms[0])
        return {"median": v, "q1": v, "q3": v, "iqr": 0.0, "n": len(ms)}
    q1, med, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1), "n": len(ms)}


def paired_ratio_median(base: Sequence[float], other: Sequence[float]) -> float:
    """Median over repetitions of ``base[i] / other[i]`` (samples taken in the same round)."""
    return float(statistics.median(b / o for b, o in zip(base, other)))


def machine_load() -> dict:
    """Load averages and the ``uptime`` line, to judge how noisy the latencies were."""
    info = {"cpu_count": os.cpu_count()}
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        info["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def environment() -> dict:
    """Library versions, interpreter, platform and the date of the run."""
    env = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "python": sys.version.split()[0], "platform": platform.platform(),
           "processor": platform.processor() or platform.machine()}
    for mod in ("torch", "onnxruntime", "onnx", "transformers", "numpy"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env
