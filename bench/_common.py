"""Small helpers shared by the bench scripts: ORT sessions, interleaved timing, summaries, tables, JSON."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Mapping, Sequence


def interleaved_latency(runners: Mapping[str, Callable[[], object]], reps: int, warmup: int,
                        desc: str = "timing") -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every runner ``reps`` times in round-robin, rotating the order each repetition.

    Interleaving means slow phases of a shared machine hit all runners alike; rotating the order
    removes any first-/last-in-round bias. Returns ``(wall, cpu)``: milliseconds per call, per
    runner name, of wall-clock time and of this process's CPU time (all threads; less sensitive
    to being descheduled on a loaded machine, but it includes thread-pool spinning).
    """
    from tqdm.auto import tqdm

    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for rep in tqdm(range(reps), desc=desc, leave=False, mininterval=1.0):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            c0, t0 = time.process_time(), time.perf_counter()
            runners[name]()
            wall[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
    return wall, cpu


# Session settings shared by the bench scripts: 2 intra-op threads, sequential, session-level
# graph optimizations (not the transformers BERT fuser, which assumes one head count everywhere).
ORT_SETTINGS = {"intra_op_num_threads": 2, "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL",
                "graph_optimization_level": "ORT_ENABLE_ALL"}


def ort_session(path: str, opt_level: str = ORT_SETTINGS["graph_optimization_level"]):
    """CPU onnxruntime session with the shared bench settings (``ORT_SETTINGS``)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = ORT_SETTINGS["intra_op_num_threads"]
    so.inter_op_num_threads = ORT_SETTINGS["inter_op_num_threads"]
    so.execution_mode = getattr(ort.ExecutionMode, ORT_SETTINGS["execution_mode"])
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, opt_level)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_feed(session, inputs: dict) -> dict:
    """numpy feeds for ``session`` from a dict of tensors (by name, else by position)."""
    names = [i.name for i in session.get_inputs()]
    if set(names) <= set(inputs):
        return {n: inputs[n].numpy() for n in names}
    return {n: v.numpy() for n, v in zip(names, inputs.values())}  # positional fallback


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


def format_table(rows: Sequence[Mapping], columns: Sequence[tuple[str, str, str]], markdown: bool = False) -> str:
    """Plain-text (or GitHub markdown) table; ``columns`` are ``(key, header, format spec)``."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([format(row[k], spec) if spec else str(row[k]) for k, _, spec in columns])
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" for _ in columns) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temp file in the same directory, then ``os.replace``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def machine_load() -> dict:
    """Load averages and the ``uptime`` line, to judge how noisy the latencies were."""
    info = {"cpu_count": os.cpu_count()}
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        import subprocess
        info["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                        timeout=5).stdout.strip()
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
