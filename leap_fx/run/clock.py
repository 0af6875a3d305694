"""Wall time per stage of a job (printed as ``[leap-fx] <stage> ...`` when verbose), for ``report.json``."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

__all__ = ["Clock"]


class Clock:
    """Wall time per stage (printed as ``[leap-fx] <stage> ...`` when verbose)."""

    def __init__(self, verbose: bool):
        self.t0, self.stages, self.verbose, self.cpu0 = time.perf_counter(), {}, verbose, time.process_time()

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        if self.verbose:
            print(f"[leap-fx] {name} ...", flush=True)
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - t, 2)
        if self.verbose:
            print(f"[leap-fx] {name} done in {self.stages[name]:.1f} s", flush=True)

    def total(self) -> dict:
        return {"total_s": round(time.perf_counter() - self.t0, 2), "stages_s": self.stages,
                "process_cpu_s": round(time.process_time() - self.cpu0, 1),
                "threads": torch.get_num_threads(), "loadavg": list(os.getloadavg())}
