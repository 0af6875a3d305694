"""Shared pieces of the task tests: the CLI in a subprocess, and one tiny run per task reused by the tests
that read it (each run is one ``leap-fx prune`` process on a tiny model, ~30 s)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--epochs", "2", "--teacher-epochs", "6", "--batch-size", "16", "--lr", "1e-3", "--teacher-lr", "3e-3",
        "--granularity", "structured", "--target", "flops:0.5", "--quiet", "--threads", "1"]


def cli(*args, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "leap_fx", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def prune(out, *args):
    res = cli("prune", *FAST, *args, "--out", str(out))  # args given here win over FAST
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), res


def eval_metric(res, metric):
    """The figure ``leap-fx eval`` printed: ``<split> <metric> <value> on N rows``."""
    assert res.returncode == 0, res.stderr[-3000:]
    first = res.stdout.splitlines()[0].split()
    return first[0], float(first[first.index(metric) + 1]), int(first[first.index("on") + 1])
