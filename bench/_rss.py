"""Resident memory of this process (Linux ``/proc``): the peak since a reset, and the peak per job stage.

``peak_rss()`` is the kernel's high-water mark (``VmHWM``, exact); ``reset_peak()`` restarts it
(``/proc/self/clear_refs``, Linux >= 4.0; returns False where that is not allowed, then the peak is the
process's). ``StageRss`` samples the RSS every ``interval`` seconds and charges each sample to the job
stage running at that moment, read from the job's own ``[leap-fx] <stage> ...`` lines on stdout (a
sampled peak: spikes shorter than ``interval`` can be missed; ``peak_rss`` cannot miss them).
"""
from __future__ import annotations

import os
import re
import sys
import threading

__all__ = ["StageRss", "peak_rss", "reset_peak", "rss"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STAGE = re.compile(r"^\[leap-fx\] (.+) \.\.\.$")


def rss() -> int:
    """Resident bytes now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def peak_rss() -> int:
    """Peak resident bytes since the process started or ``reset_peak``."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/self/status has no VmHWM line")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class StageRss:
    """``with StageRss() as s: run_job()`` -> ``s.peaks``: ``{stage: peak sampled RSS bytes}`` (``"(setup)"``
    before the first stage line). Stdout passes through unchanged."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peaks, self.stage = interval, {}, "(setup)"
        self._stop, self._out, self._line = threading.Event(), None, ""

    def write(self, text: str) -> int:
        self._line += text
        *done, self._line = self._line.split("\n")
        for line in done:
            m = _STAGE.match(line.strip())
            if m:
                self.sample()
                self.stage = m.group(1)
        return self._out.write(text)

    def flush(self) -> None:
        self._out.flush()

    def __getattr__(self, name):  # isatty, encoding, fileno ...: the real stdout's
        return getattr(self._out, name)

    def sample(self) -> None:
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> StageRss:
        self._out, sys.stdout = sys.stdout, self
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        sys.stdout = self._out
