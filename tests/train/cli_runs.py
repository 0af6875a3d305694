"""Fixtures shared by the resume and distributed tests: a tiny CLI run and its uninterrupted reference."""
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, _env, tiny_model_folder

SLOW_CLI = """
import os, sys, time
import leap_fx.train as lt
import leap_fx.train.loop as lp
real = lp.train
def slow_train(model, *a, **k):
    method = a[4] if len(a) > 4 else k.get("method")  # None: the dense teacher's fine-tune
    if (method is None) == (os.environ["SLOW"] == "teacher"):
        model.register_forward_pre_hook(lambda m, args: time.sleep(0.1) if m.training else None)
    return real(model, *a, **k)
lt.train = lp.train = slow_train
from leap_fx.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_resume")
    csv_path, tok, model_dir = tiny_model_folder(folder)
    common = ["prune", "--model", str(model_dir), "--data", csv_path, "--text-column", "review", "--label-column",
              "sentiment", "--max-length", "16", "--batch-size", "16", "--lr", "1e-3", "--teacher-lr", "3e-3",
              "--cache-dir", str(folder / "cache"), "--granularity", "hybrid", "--mask-block-size", "8",
              "--target-density", "0.4", "--epochs", "3", "--teacher-epochs", "2", "--quiet",
              "--continue-anyway"]  # a 2-epoch teacher on 16 validation rows: not clearly above guessing
    return folder, common


def _cli(args, slow=None, wait=True):
    """``leap-fx ARGS``; ``slow="teacher"|"student"``: that training phase sleeps 0.1 s per step."""
    cmd = [sys.executable, "-c", SLOW_CLI, *args] if slow else [sys.executable, "-m", "leap_fx", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=dict(_env(), SLOW=slow), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_reference(cli_setup):
    folder, common = cli_setup
    ref = _cli([*common, "--out", str(folder / "ref")])
    assert ref.returncode == 0, ref.stderr[-2000:]
    return json.loads((folder / "ref" / "report.json").read_text())


def assert_same_report(a, b):
    assert abs(a["density"]["achieved"] - b["density"]["achieved"]) <= 1e-3  # within 0.1 pt
    assert b["accuracy"]["pruned"]["test"] == pytest.approx(a["accuracy"]["pruned"]["test"], abs=1e-9)
    assert b["accuracy"]["dense"] == a["accuracy"]["dense"]  # the same teacher
