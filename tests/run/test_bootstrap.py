"""The paired bootstrap of an accuracy change (leap_fx/run/bootstrap.py)."""
import math

import numpy as np
import pytest

from leap_fx.run.bootstrap import format_delta, paired_bootstrap


def test_identical_scores_have_a_zero_interval():
    c = np.array([1, 0, 1, 1, 0, 1])
    r = paired_bootstrap(c, c, resamples=500)
    assert r["delta_pt"] == r["low_pt"] == r["high_pt"] == 0.0 and r["rows"] == 6


def test_interval_matches_the_normal_approximation_on_many_rows():
    rng = np.random.default_rng(1)
    a = rng.random(4000) < 0.80
    b = a.copy()
    flip = rng.random(4000) < 0.06  # the pruned model changes 6 % of the answers, more often to wrong
    b[flip] = rng.random(int(flip.sum())) < 0.35
    r = paired_bootstrap(a, b, resamples=4000, seed=3)
    d = b.astype(float) - a.astype(float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size) * 100
    assert r["delta_pt"] == pytest.approx(100 * d.mean())
    assert r["high_pt"] - r["low_pt"] == pytest.approx(2 * half, rel=0.1)
    assert r["low_pt"] < r["delta_pt"] < r["high_pt"] < 0  # a clear loss: the interval excludes 0
    unpaired = 1.96 * math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) * 100
    assert half < unpaired / 3  # pairing removes the rows' own difficulty from the spread


def test_same_seed_same_interval_and_bad_input():
    a, b = np.ones(50), np.r_[np.ones(45), np.zeros(5)]
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    with pytest.raises(ValueError, match="same non-empty rows"):
        paired_bootstrap(a, b[:10])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, b, level=1.5)
    text = format_delta(paired_bootstrap(a, b, resamples=200))
    assert text.startswith("-10.0 pt [") and "paired bootstrap, 50 rows" in text and format_delta(None) == "-"
