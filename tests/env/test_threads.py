"""The thread default (leap_fx/run/threads.py), its bench (bench/threads.py, tiny), the warnings the job's
export leaves out, and the plots of a structured result."""
import json
import os
import subprocess
import sys
import warnings

import pytest

from leap_fx.env import threads
from leap_fx.run.plots import curves_plot, structure_plot
from passes.export.fallback import filtered_warnings
from tests.helpers import ROOT


@pytest.mark.parametrize("cores, load, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 8.0, 1),
                                                   (8, 2.2, 6), (1, 0.0, 1)])
def test_auto_threads_leaves_the_busy_cores(cores, load, expected):
    assert threads.auto_threads(cores, load) == expected


def test_choose_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.choose_threads(3) == (3, "--threads")
    n, why = threads.choose_threads(0)
    assert 1 <= n <= threads.physical_cores() <= (os.cpu_count() or 1) and why.startswith("auto")
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert threads.choose_threads(0) == (threads.physical_cores(), threads.choose_threads(0)[1])
    assert "passive" in threads.choose_threads(0)[1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads(0) == (1, "OMP_NUM_THREADS")


def test_passive_waiting_is_only_set_before_torch_and_never_over_the_user(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "torch" in sys.modules and threads.prefer_passive_waiting() is False  # too late here: untouched
    assert "OMP_WAIT_POLICY" not in os.environ
    code = ("import os; from leap_fx.env.threads import prefer_passive_waiting as p; "
            "print(p(), os.environ.get('OMP_WAIT_POLICY'))")
    for env, want in (({}, "True PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "False ACTIVE")):
        full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={**full, "PYTHONPATH": ROOT, **env}, timeout=120)
        assert res.stdout.strip() == want, res.stderr


@pytest.mark.slow
def test_bench_threads_tiny(tmp_path):
    out = tmp_path / "threads.json"
    res = subprocess.run([sys.executable, "-m", "bench.threads", "--size", "tiny", "--loads", "0,1", "--settings",
                          "1,auto:passive", "--steps", "2", "--warmup", "0", "--rounds", "1", "--settle", "0",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "s/step" in res.stdout and "x best" in res.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["load"], r["setting"]) for r in rows] == [(0, "1"), (0, "auto:passive"), (1, "1"), (1, "auto:passive")]
    assert all(r["median_s"] > 0 and len(r["runs"][0]["step_s"]) == 2 for r in rows)
    assert rows[0]["threads"] == 1 and rows[1]["threads"] == threads.physical_cores()
    assert min(r["slowdown"] for r in rows if r["load"] == 0) == 1.0
    assert not [p for p in os.listdir(tmp_path) if p != "threads.json"]


# -- export warnings at the job's call site -----------------------------------------------------------
def _warn(text, category=UserWarning, filename="x.py"):
    warnings.warn_explicit(text, category, filename, 1)


def test_known_harmless_warnings_dropped_others_kept():
    from torch.jit import TracerWarning
    dropped = []
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with filtered_warnings([], dropped):
            _warn("Exporting aten::index operator of advanced indexing in opset 17 is achieved by ...",
                  filename="/site-packages/torch/onnx/utils.py")
            _warn("Converting a tensor to a Python boolean might cause the trace to be incorrect.", TracerWarning,
                  "/site-packages/transformers/masking_utils.py")
            _warn("Converting a tensor to a Python boolean might cause the trace to be incorrect.", TracerWarning,
                  "/my/model.py")  # the user's own code: a real warning
            _warn("something else entirely")
    shown = [(type(w.message).__name__, w.filename) for w in outer]
    assert shown == [("TracerWarning", "/my/model.py"), ("UserWarning", "x.py")]
    assert len(dropped) == 2


def test_every_warning_is_shown_when_the_export_fails():
    dropped = []
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError):
            with filtered_warnings([], dropped):
                _warn("Exporting aten::index operator of advanced indexing in opset 17 is achieved by ...",
                      filename="/site-packages/torch/onnx/utils.py")
                raise RuntimeError("parity failed")
    assert len(outer) == 1 and not dropped


# -- plots ------------------------------------------------------------------------------------------
def test_structure_plot(tmp_path):
    structure = {"heads": [{"layer": 0, "before": 12, "kept": 9, "live": 9}, {"layer": 1, "before": 12, "kept": 1,
                                                                              "live": 0}],
                 "neurons": [{"layer": 0, "before": 1536, "kept": 700, "live": 700},
                             {"layer": 1, "before": 1536, "kept": 300, "live": 300}]}
    path = structure_plot(structure, str(tmp_path / "structure.png"), "t")
    assert open(path, "rb").read(4) == b"\x89PNG" and os.listdir(tmp_path) == ["structure.png"]
    with pytest.raises(ValueError, match="empty structure"):
        structure_plot({"heads": [], "neurons": []}, str(tmp_path / "x.png"))


def test_curves_show_accuracy_and_keep_the_loss_readable(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    history = [{"type": "train", "step": s, "loss": 0.6 + (75.0 if s < 3 else 0.0), "task": 0.6 - 0.01 * s,
                "ce": 0.7, "kd": 0.2, "R": 1 - s / 40, "L_reg": 0.1, "lambda": 10.0} for s in range(1, 21)]
    history += [{"type": "eval", "step": 10, "val_accuracy": 0.7, "val_loss": 0.6},
                {"type": "eval", "step": 20, "val_accuracy": 0.75, "val_loss": 0.55}]
    figs = []
    monkeypatch.setattr("leap_fx.run.plots._save", lambda fig, path: figs.append(fig) or path)
    curves_plot(history, str(tmp_path / "c.png"), 0.5, "t", ("L_reg", "lambda"), dense_accuracy=0.8)
    loss, acc = figs[0].axes[0], figs[0].axes[1]
    assert loss.get_ylim()[1] < 2.0  # the early lambda * L_reg spike (75) does not set the scale
    lines = {line.get_label(): line for line in acc.get_lines()}
    assert list(lines["pruned (validation)"].get_ydata()) == [0.7, 0.75]
    assert any(label.startswith("dense teacher 0.800") for label in lines)
    plt.close(figs[0])
