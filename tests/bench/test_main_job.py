"""bench/main_job.py: times `leap-fx prune` as a subprocess per mode and tabulates its report (tiny model)."""
import json
import shlex

import pytest

from bench import main_job

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


@pytest.fixture(scope="module")
def tiny_args(tiny_model_dir):
    folder, csv_path, model_dir = tiny_model_dir
    args = ["--model", str(model_dir), "--data", csv_path, "--text-column", "review", "--label-column", "sentiment",
            "--max-length", "16", "--batch-size", "16", "--lr", "1e-3", "--teacher-lr", "3e-3",
            "--granularity", "structured", "--target-density", "0.5", "--epochs", "1", "--teacher-epochs", "6"]
    return folder, shlex.join(args)


def test_quick_job_is_timed_and_summarized(tiny_args, capsys):
    folder, extra = tiny_args
    out = folder / "main_job.json"
    result = main_job.main(["--modes", "quick", "--work-dir", str(folder / "work"), "--out", str(out),
                            "--prune-args", extra])
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"])) and saved["benchmark"] == "main_job"
    (row,) = saved["rows"]
    assert row["status"] == "complete", row
    report = json.loads((folder / "work" / "quick" / "report.json").read_text())
    assert report["options"]["quick"] and not report["options"]["use_cache"]  # fresh-machine conditions
    assert row["wall_s"] >= row["report_total_s"] > row["teacher_s"] > 0  # outside timing covers the job
    assert row["within_budget"] == (row["wall_s"] <= 300)
    assert row["density"] == report["density"]["achieved"] and row["parity"] <= 1e-4
    heads = report["structure"]["heads"]
    assert row["heads"] == f"{sum(h['live'] for h in heads)}/{sum(h['before'] for h in heads)}"
    assert row["train_examples"] == report["data"]["train"] and row["steps"] == report["train"]["steps"]
    assert "--no-cache" in row["command"] and "--quick" in row["command"]
    printed = capsys.readouterr().out
    assert "pruned test (ORT)" in printed and f"{row['density']:.3f}" in printed


def test_failed_job_is_recorded_not_raised(tiny_args, tmp_path):
    _, extra = tiny_args
    result = main_job.main(["--modes", "quick", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "r.json"),
                            "--prune-args", extra + " --data " + str(tmp_path / "missing.csv")])
    (row,) = result["rows"]
    assert row["status"] == "failed" and row["returncode"] == 2 and "not found" in row["error"]
    assert json.loads((tmp_path / "r.json").read_text())["rows"][0]["status"] == "failed"


def test_modes_are_checked():
    with pytest.raises(SystemExit):
        main_job.parse_args(["--modes", "quick,huge"])
    assert main_job.parse_args(["--modes", "full"]).modes == ["full"]
