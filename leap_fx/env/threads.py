"""How many intra-op threads torch should use, and how its OpenMP threads should wait.

torch's default (one thread per physical core, OpenMP threads that spin while they wait) collapses
on a shared machine: when another process holds a core, every parallel region waits for the thread
that was descheduled while the others spin. ``bench/threads.py`` measured it (training steps of a
4-layer BERT, batch 16, sequence 48, on a 2-core machine shared with other jobs, load 5-15):
torch's default was 4.4-15x slower than the best setting; passive waiting (``OMP_WAIT_POLICY=PASSIVE``)
with one thread per core was the best setting at every load, one thread 1.35-1.5x slower than it.

So ``leap-fx`` sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (unless the user set it;
``passive_waiting()``), and the automatic thread count (``--threads 0``) is then every physical core.
Where passive waiting could not be set (torch imported first, e.g. the Python API), it is
``auto_threads()``: physical cores minus the 1-minute load average (rounded), at least 1.
``OMP_NUM_THREADS`` set by the user wins. No torch import here.
"""
from __future__ import annotations

import os
import sys
from typing import Optional


def physical_cores() -> int:
    """Physical cores this process may run on (``/proc/cpuinfo`` core ids, capped by the CPU affinity)."""
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        logical = os.cpu_count() or 1
    cores, phys = set(), None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    cores.add((phys, value.strip()))
    except OSError:
        pass
    return max(1, min(logical, len(cores) or logical))


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def auto_threads(cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """``max(1, cores - round(load))``: the physical cores left over by the other processes."""
    cores = physical_cores() if cores is None else cores
    load = load_average() if load is None else load
    return max(1, cores - int(round(load or 0.0)))


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; only effective before torch
    (OpenMP) is loaded, so this returns whether it is (or was already) in effect."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return passive_waiting()


def passive_waiting() -> bool:
    """Whether torch's OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def choose_threads(requested: int) -> tuple[int, str]:
    """``(threads, why)`` for ``--threads requested`` (0 = automatic)."""
    if requested and requested > 0:
        return int(requested), "--threads"
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"])), "OMP_NUM_THREADS"
    cores, load = physical_cores(), load_average()
    if passive_waiting():
        return cores, f"auto: {cores} physical core(s), OpenMP passive waiting"
    why = f"auto: {cores} physical core(s) - load {load:.1f}" if load is not None else f"auto: {cores} core(s)"
    return auto_threads(cores, load), why
