"""The command line under hostile use (issue 12): every error is one line naming the fix (exit 2 bad
input, 1 failure), --debug shows the traceback, and `leap-fx export` never replaces a verified ONNX with
nothing."""
import json
import math
import os
import subprocess
import sys

import pytest

from leap_fx import cli
from tests.conftest import tiny_bert
from tests.helpers import tiny_model_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_line(capsys, code, argv):
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def slim_run(tmp_path_factory):
    """A finished tiny run (injected model: no teacher fine-tune)."""
    from leap_fx.run.job import run_prune
    from tests.helpers import tiny_options
    folder = tmp_path_factory.mktemp("cli_hostile")
    csv_path, tok, model_dir = tiny_model_folder(folder)
    out = folder / "run"
    run_prune(tiny_options(csv_path, out, epochs=1, continue_anyway=True), model=tiny_bert(), tokenizer=tok,
              teacher=tiny_bert(seed=3))  # a random teacher: no better than guessing, on purpose
    return folder, out, csv_path, model_dir


@pytest.mark.parametrize("atol", ["-1", "nan", "0", "inf"])
def test_export_with_a_bad_atol_keeps_the_verified_onnx(slim_run, capsys, atol):
    _, out, _, _ = slim_run
    before = (out / "model.onnx").read_bytes()
    err = one_line(capsys, 2, ["export", str(out / "slim"), "--out", str(out / "model.onnx"), "--atol", atol])
    assert err == f"leap-fx export: error: --atol {float(atol)} must be a positive number (default: 1e-4)"
    assert (out / "model.onnx").read_bytes() == before


@pytest.mark.slow
def test_export_that_fails_parity_keeps_the_verified_onnx(slim_run, capsys, monkeypatch):
    import passes.export.parity as parity
    _, out, _, _ = slim_run
    target = out / "model.onnx"
    before = target.read_bytes()
    real = parity.ort_outputs
    monkeypatch.setattr(parity, "ort_outputs", lambda s, f: real(s, f) + 1.0)
    err = one_line(capsys, 1, ["export", str(out / "slim"), "--out", str(target)])
    assert err.startswith("leap-fx export: failed: ") and "onnxruntime differs from PyTorch by" in err
    assert err.endswith(f"({target} was left as it was; the rejected graph is {out}/model.failed.onnx)")
    assert target.read_bytes() == before
    os.remove(out / "model.failed.onnx")
    assert not [f for f in os.listdir(out) if f.startswith(".model")]  # no staging file left


def test_export_that_succeeds_replaces_the_file(slim_run, capsys, tmp_path):
    _, out, _, _ = slim_run
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    assert cli.main(["export", str(out / "slim"), "--out", str(target)]) == 0
    assert target.read_bytes()[:4] != b"old" and f"wrote {target}" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_export_onto_a_directory(slim_run, capsys, tmp_path):
    _, out, _, _ = slim_run
    err = one_line(capsys, 2, ["export", str(out / "slim"), "--out", str(tmp_path)])
    assert err == f"leap-fx export: error: --out {tmp_path} is a directory; give the ONNX file to write " \
                  f"(e.g. {tmp_path}/model.onnx)"


def test_resume_after_the_onnx_went_missing_is_not_complete(slim_run, capsys, tmp_path):
    import shutil
    folder, out, csv_path, _ = slim_run
    run = shutil.copytree(out, tmp_path / "run")
    os.remove(run / "model.onnx")
    opts = json.loads((run / "options.json").read_text())
    (tmp_path / "o.json").write_text(json.dumps({**opts, "out": str(run)}))
    err = one_line(capsys, 2, ["prune", "--options", str(tmp_path / "o.json"), "--out", str(run), "--resume",
                               "--continue-anyway"])
    assert f"the run in {run} is complete but model.onnx is missing; re-create model.onnx with `leap-fx export" in err


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def boom(options):
        raise KeyError("surprise")
    monkeypatch.setattr("leap_fx.run.job.run_prune", boom)
    err = one_line(capsys, 1, ["prune", "--out", "x"])
    assert err == "leap-fx prune: failed: KeyError: 'surprise' (--debug shows the traceback)"
    for argv in (["--debug", "prune", "--out", "x"], ["prune", "--out", "x", "--debug"]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.strip().endswith("failed: KeyError: 'surprise'")


@pytest.mark.parametrize("argv, needle", [
    (["prune", "--threads", "-1"], "--threads -1 must be between 0 (automatic) and 1024"),
    (["prune", "--max-length", "1"], "--max-length 1 must be >= 2 (or left unset: chosen from the data)"),
    (["prune", "--data", "."], "data path '.' is a directory; pass a .csv, .tsv or .jsonl file"),
])
def test_bad_numbers_and_paths_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert needle in one_line(capsys, 2, argv)


def test_options_file_with_a_wrong_type_names_file_and_field(capsys, tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"epochs": "two"}))
    err = one_line(capsys, 2, ["prune", "--options", str(path)])
    assert err == f"leap-fx prune: error: --options {path}: PruneOptions.epochs must be float, got str 'two'"
    path.write_text(json.dumps({"method_options": {"temperature": "hot"}}))
    assert "LeapConfig.temperature must be float, got str 'hot'" in one_line(capsys, 2, ["prune", "--options",
                                                                                         str(path)])


def test_analyze_a_folder_without_weights_or_with_truncated_weights(slim_run, capsys, tmp_path):
    import shutil
    _, _, _, model_dir = slim_run
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "config.json", bare)
    assert f"--model '{bare}' has no weights" in one_line(capsys, 2, ["analyze", "--model", str(bare)])
    cut = shutil.copytree(model_dir, tmp_path / "cut")
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:300])
    err = one_line(capsys, 2, ["analyze", "--model", str(cut)])
    assert f"the model in {cut} cannot be loaded (SafetensorError" in err and "truncated or damaged" in err


def test_unwritable_out_is_one_line(slim_run, capsys):
    folder, _, csv_path, model_dir = slim_run
    err = one_line(capsys, 2, ["prune", "--model", str(model_dir), "--data", csv_path, "--text-column", "review",
                               "--label-column", "sentiment", "--max-length", "16", "--out", "/proc/leap-fx-run",
                               "--quiet", "--cache-dir", str(folder / "cache")])
    assert err.startswith("leap-fx prune: error: --out /proc/leap-fx-run: cannot write there")


@pytest.mark.slow
def test_a_second_process_on_a_running_out_is_refused(slim_run, tmp_path):
    folder, _, csv_path, model_dir = slim_run
    out = tmp_path / "busy"
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from leap_fx.spec.options import PruneOptions; from leap_fx.run.rundir import RunDir\n"
        f"RunDir({str(out)!r}, PruneOptions(out={str(out)!r})).open(); print('locked', flush=True); time.sleep(90)")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for flag in ("--overwrite", "--resume"):
            res = subprocess.run([sys.executable, "-m", "leap_fx", "prune", "--model", str(model_dir), "--data",
                                  csv_path, "--text-column", "review", "--label-column", "sentiment", "--max-length",
                                  "16", "--out", str(out), flag, "--quiet", "--cache-dir", str(folder / "cache")],
                                 capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
            assert res.returncode == 2 and "Traceback" not in res.stderr
            assert f"--out {out} is in use by another leap-fx run (pid {holder.pid}" in res.stderr
        assert (out / "options.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_nan_atol_is_not_a_number_that_passes(capsys, slim_run):
    assert not (math.nan > 0)  # why --atol nan must be refused up front: every comparison with it is False
    _, out, _, _ = slim_run
    assert "must be a positive number" in one_line(capsys, 2, ["export", str(out / "slim"), "--out",
                                                               str(out / "x.onnx"), "--atol", "nan"])
    assert not (out / "x.onnx").exists()


def test_eval_of_a_truncated_onnx_is_one_line(slim_run, capsys, tmp_path):
    _, out, csv_path, _ = slim_run
    cut = tmp_path / "cut.onnx"
    cut.write_bytes((out / "model.onnx").read_bytes()[:1000])
    err = one_line(capsys, 2, ["eval", str(cut), "--data", csv_path, "--text-column", "review", "--label-column",
                               "sentiment", "--tokenizer", str(out / "tokenizer")])
    assert err.startswith("leap-fx eval: error:") and "cut.onnx: not a readable ONNX file" in err
