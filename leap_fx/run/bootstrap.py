"""Paired bootstrap of an accuracy difference: the same rows scored by two models.

With ``c_a, c_b`` the 0/1 correctness of the dense and the pruned model on the same ``n`` rows, the
difference is ``delta = mean(c_b - c_a)``. Resampling rows with replacement ``B`` times (both models'
scores move together: the pairing removes the rows' own difficulty from the spread) gives ``delta*_1 ..
delta*_B``; the percentile interval ``[q_{alpha/2}, q_{1-alpha/2}]`` of them is the 95 % interval
(Efron & Tibshirani 1993, ch. 13; Koehn 2004 for paired comparisons of systems on one test set). A goal
such as "at most 1 point lost" is met when the interval's lower end is above ``-1`` point, not when one
draw is.
"""
from __future__ import annotations

import numpy as np

__all__ = ["paired_bootstrap", "format_delta"]

CHUNK = 1000  # resamples drawn at once (memory: CHUNK x rows indices)


def paired_bootstrap(base, other, resamples: int = 10000, level: float = 0.95, seed: int = 0) -> dict:
    """``other - base`` in accuracy points (per-row 0/1 or scores), with its paired bootstrap interval."""
    a, b = np.asarray(base, dtype=np.float64).reshape(-1), np.asarray(other, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_bootstrap needs the same non-empty rows scored twice, got {a.size} and {b.size}")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"level={level} must be in (0, 1) and resamples={resamples} >= 1")
    d, rng, means = b - a, np.random.default_rng(seed), []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, d.size, size=(min(CHUNK, resamples - start), d.size))
        means.append(d[idx].mean(1))
    lo, hi = np.quantile(np.concatenate(means), [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"delta_pt": 100 * float(d.mean()), "low_pt": 100 * float(lo), "high_pt": 100 * float(hi),
            "level": level, "rows": int(d.size), "resamples": resamples}


def format_delta(result: dict | None) -> str:
    """``-0.5 pt [-1.8, +0.8]`` (95 % paired bootstrap), or ``-`` when absent."""
    if not result:
        return "-"
    return (f"{result['delta_pt']:+.1f} pt [{result['low_pt']:+.1f}, {result['high_pt']:+.1f}] "
            f"({100 * result['level']:.0f} % paired bootstrap, {result['rows']} rows)")
