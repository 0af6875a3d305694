"""Progress of a long loop: a tqdm bar on a terminal, else one plain line every ``seconds`` (nohup,
CI and log files see steady progress instead of minutes of silence) and one at the end (with
``end_line=False``: only if the loop printed a line before, so short loops stay quiet)."""
from __future__ import annotations

import sys
import time
from typing import Optional


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """``update(n, **values)`` per step; ``close()`` at the end. Silent when ``disable``."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", disable: bool = False,
                 seconds: float = 30.0, stream=None, end_line: bool = True):
        self.total, self.step, self.desc, self.disable = total, initial, desc, disable
        self.end_line, self.printed = end_line, False
        self.stream = stream or sys.stderr
        self.seconds, self.t0, self.first = seconds, time.perf_counter(), initial
        self.last = self.t0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        if not disable and self.tty:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, file=self.stream)

    def update(self, n: int = 1, values: Optional[dict] = None) -> None:
        self.step += n
        if self.disable:
            return
        if self.bar is not None:
            self.bar.update(n)
            if values:
                self.bar.set_postfix({k: round(v, 4) for k, v in values.items()})
            return
        now = time.perf_counter()
        end = self.step == self.total and (self.end_line or self.printed)
        if now - self.last >= self.seconds or end:
            self.last, self.printed = now, True
            done = self.step - self.first
            eta = (now - self.t0) / done * (self.total - self.step) if done else 0.0
            parts = [f"[{self.desc}] step {self.step}/{self.total}"]
            parts += [f"{k} {v:.4g}" for k, v in (values or {}).items()] + [f"ETA {_fmt_eta(eta)}"]
            print("  ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
