"""What every job does around its stages: ``start`` (torch threads, the absolute ``--out``, the stage clock)
and ``in_rundir`` (open the run folder; a finished run returns its report; success finishes it, any failure,
Ctrl-C too, leaves ``--out`` as it was or resumable, with a note saying which)."""
from __future__ import annotations

import os
from typing import Callable

import torch

from leap_fx.env.threads import choose_threads
from leap_fx.run.clock import Clock
from leap_fx.run.rundir import RunDir

__all__ = ["in_rundir", "start"]


def start(opts) -> tuple[str, Clock]:
    """Set torch's threads from ``opts.threads`` (said when verbose); ``(absolute out, Clock)``."""
    threads, why = choose_threads(opts.threads)
    torch.set_num_threads(threads)
    if opts.verbose:
        print(f"[leap-fx] torch threads: {threads} ({why}; --threads N to choose)", flush=True)
    return os.path.abspath(opts.out), Clock(opts.verbose)


def in_rundir(rundir: RunDir, summary: Callable[[dict], str], body: Callable[[], dict]) -> dict:
    """``body()``'s report, run inside the opened ``rundir``; a complete run's report (its ``summary``
    printed) without running anything."""
    try:
        done = rundir.open()
        if done is not None:
            print(f"run in {rundir.out} is already complete:\n{summary(done)}", flush=True)
            return done
        report = body()
        rundir.finish()
        return report
    except BaseException as err:  # Ctrl-C too: a run with nothing to resume leaves --out as it was
        note = rundir.fail()
        if note:
            err.add_note(note.strip())
        raise
    finally:
        rundir.close()
