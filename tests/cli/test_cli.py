"""leap-fx command line: help texts, one-line errors (exit 2), prune/export/eval on a tiny model."""
import json
import os
import re
import subprocess
import sys

import pytest

from leap_fx import cli
from leap_fx.cli.prune import method_option_fields, task_option_fields
from leap_fx.spec.fields import flag_of
from leap_fx.spec.options import PruneOptions
from tests.helpers import ROOT


def run_cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "leap_fx", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_help_documents_every_prune_option(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["prune", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for f in PruneOptions.__dataclass_fields__:
        if f in ("method_options", "task_options"):  # each method's and task's own options are flags of their own
            continue
        flag = (flag_of(PruneOptions.__dataclass_fields__[f]) or ("--" + f.replace("_", "-"),))[0]
        assert flag in text, flag
    for name in [*method_option_fields(), *task_option_fields()]:  # every registered method's options, e.g. LEAP's --temperature
        assert "--" + name.replace("_", "-") in text, name
    assert "--temperature" in text and re.search(r"\[leap[,\]]", text)  # options name their methods
    assert text.count("default") >= 20  # defaults are spelled out
    for command in ("analyze", "export", "eval"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "--" in capsys.readouterr().out


def test_module_entry_point_runs():
    res = run_cli("--help", timeout=120)
    assert res.returncode == 0 and "prune" in res.stdout and "analyze" in res.stdout


@pytest.mark.parametrize("argv, needle", [
    (["prune", "--target-density", "1.5"], "outside (0, 1]"),
    (["prune", "--granularity", "diagonal", "--data", "nope.csv"], "unknown granularity 'diagonal'"),
    (["prune", "--data", "nope.csv"], "data file not found"),
    (["prune", "--method", "magnitude", "--temperature", "8"], "--temperature is an option of leap"),
    (["prune", "--method", "l0"], "invalid choice"),
    (["prune", "--epochs", "two"], "invalid float value"),
    (["eval", "does/not/exist.onnx"], "not found"),
    (["export", "/tmp", "--out", "x.onnx"], "not a slim model directory"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        sys.exit(cli.main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    res = run_cli("prune", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "data file not found" in res.stderr


def test_prune_export_eval_round_trip(tiny_model_dir):
    folder, csv_path, model_dir = tiny_model_dir
    out = folder / "run"
    common = ["--model", str(model_dir), "--data", csv_path, "--text-column", "review",
              "--label-column", "sentiment", "--max-length", "16", "--batch-size", "16",
              "--lr", "1e-3", "--teacher-lr", "3e-3", "--cache-dir", str(folder / "cache"),
              "--granularity", "structured", "--target-density", "0.5", "--quiet", "--out", str(out)]
    res = run_cli("prune", *common, "--epochs", "1", "--teacher-epochs", "6")
    assert res.returncode == 0, res.stderr
    assert "achieved density" in res.stdout and "test acc" in res.stdout  # the summary table
    rep = json.loads((out / "report.json").read_text())
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4

    again = run_cli("prune", *common, "--epochs", "1", "--teacher-epochs", "6")
    assert again.returncode == 2 and "--overwrite" in again.stderr

    onnx = folder / "re.onnx"
    exp = run_cli("export", str(out / "slim"), "--out", str(onnx))
    assert exp.returncode == 0, exp.stderr
    assert onnx.exists() and "parity" in exp.stdout

    ev = run_cli("eval", str(onnx), "--data", csv_path, "--text-column", "review",
                 "--label-column", "sentiment", "--tokenizer", str(out / "tokenizer"), "--max-length", "16")
    assert ev.returncode == 0, ev.stderr
    acc = float(ev.stdout.split("accuracy")[1].split()[0])
    assert acc == pytest.approx(rep["accuracy"]["pruned"]["test"], abs=1e-6)  # same split, same graph

    ev_torch = run_cli("eval", str(out / "slim"), "--data", csv_path, "--text-column", "review",
                       "--label-column", "sentiment", "--max-length", "16")
    assert ev_torch.returncode == 0, ev_torch.stderr
    assert float(ev_torch.stdout.split("accuracy")[1].split()[0]) == pytest.approx(acc, abs=1e-6)


def test_analyze_prints_the_plan(tiny_model_dir, capsys):
    _, _, model_dir = tiny_model_dir
    assert cli.main(["analyze", "--model", str(model_dir), "--text", "good film"]) == 0
    out = capsys.readouterr().out
    assert "2 attention, 2 feed-forward families" in out and "4 x 8" in out
    assert cli.main(["analyze", "--model", str(model_dir), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["families"]) == 4


def test_options_file_is_read_and_overridden(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("leap_fx.run.job.run_prune", lambda o: seen.setdefault("o", o) and {"status": "complete"})
    path = tmp_path / "options.json"
    path.write_text(json.dumps(PruneOptions(target_density=0.2, epochs=4).to_dict()))
    assert cli.main(["prune", "--options", str(path), "--epochs", "3", "--quick"]) == 0
    o = seen["o"]
    assert (o.target_density, o.epochs, o.quick) == (0.2, 3.0, True)
