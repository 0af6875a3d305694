"""bench/_rss.py: the kernel's peak RSS resets per row, and StageRss charges memory to the job stage that
was running (read from the job's own "[leap-fx] <stage> ..." lines), passing stdout through."""
import mmap
import time

import pytest

from bench._rss import StageRss, peak_rss, reset_peak, rss

MB = 2 ** 20


def _touched(n: int) -> mmap.mmap:
    """``n`` bytes of fresh anonymous memory, every page written (resident); ``close()`` unmaps them. Not a
    bytearray: malloc may hand back untouched zero pages (no RSS) or keep freed ones (RSS stays), by heap state."""
    block = mmap.mmap(-1, n)
    for i in range(0, n, mmap.PAGESIZE):
        block[i] = 1
    return block


def test_peak_follows_an_allocation_and_resets():
    if not reset_peak():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    base = peak_rss()
    block = _touched(200 * MB)
    assert peak_rss() >= base + 150 * MB and rss() >= 150 * MB
    block.close()
    assert reset_peak() and peak_rss() < base + 150 * MB


def test_stage_rss_charges_each_stage_and_passes_stdout(capsys):
    with StageRss(interval=0.01) as s:
        print("[leap-fx] small ...", flush=True)
        time.sleep(0.05)
        print("[leap-fx] big ...", flush=True)
        block = _touched(200 * MB)
        time.sleep(0.05)
        block.close()
        print("[leap-fx] big done in 0.1 s", flush=True)  # not a stage start
    assert set(s.peaks) >= {"small", "big"} and s.stage == "big"
    assert s.peaks["big"] >= s.peaks["small"] + 150 * MB
    assert "[leap-fx] big done in 0.1 s" in capsys.readouterr().out
