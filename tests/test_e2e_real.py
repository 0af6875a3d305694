"""The --quick pipeline on the real model (MiniLM-L6) and real data (Rotten Tomatoes), end to end.

Two runs of ``leap-fx prune --quick`` (about 3 min each on 2 cores; the second reuses the first's cached teacher):

- the defaults (LEAP ``structured`` at ``flops:0.5``: heads + neurons, the path that strips and exports a
  smaller, faster graph): encoder FLOPs within 1 pt of the target, parity, accuracy above the majority
  class, the slim ONNX measured faster than the dense one in the same run;
- ``hybrid`` (the default before: 32x32 attention blocks, single FFN weights) at its density:0.3 default,
  density within 1 pt. The regulariser counts the granules Top-K keeps (``LeapConfig.ratio="kept"``); with
  the paper's soft R (``k n``) the density sat up to one head per layer above it (0.3105 for target 0.3).
"""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory):
    """One teacher cache for both runs: the first fine-tunes the dense teacher, the second reuses it."""
    return str(tmp_path_factory.mktemp("teacher-cache"))


def quick_run(tmp_path, cache, *extra):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "leap_fx", "prune", "--quick", "--quiet", "--out", str(out),
                          "--cache-dir", cache, *extra],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "achieved density" in res.stdout  # the summary table is printed even with --quiet
    report = json.loads((out / "report.json").read_text())
    assert report["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert report["accuracy"]["pruned"]["test"] > report["data"]["majority_test"], report["accuracy"]
    for name in ("density.png", "curves.png", "model.onnx"):
        assert (out / name).stat().st_size > 0
    return report


def test_quick_prune_defaults_on_real_data(tmp_path, teacher_cache):
    report = quick_run(tmp_path, teacher_cache)
    assert report["resolved_options"]["granularity"] == "structured"
    assert report["target"]["target"] == "flops:0.5"
    assert abs(report["flops"]["slim_fraction"] - 0.5) <= 0.01, report["flops"]
    assert report["target"]["achieved"] == report["flops"]["slim_fraction"] and "warning" not in report["target"]
    assert report["parameters"]["slim"] < report["parameters"]["dense"]  # heads/neurons really removed
    assert report["latency"]["batches"]["b32"]["speedup"]["slim"]["median"] > 1.0
    assert report["files"]["slim_bytes"] < report["files"]["dense_bytes"]


def test_quick_prune_hybrid_density_on_real_data(tmp_path, teacher_cache):
    report = quick_run(tmp_path, teacher_cache, "--granularity", "hybrid")
    assert report["target"]["target"] == "density:0.3"
    assert abs(report["density"]["achieved"] - 0.3) <= 0.01, report["density"]
    assert report["density"]["nonzero_in_plan"] == pytest.approx(report["density"]["achieved"], abs=1e-6)
