"""run/frame.py: the wrapper every job runs its stages in."""
import json
import os

import pytest

from leap_fx.run.frame import in_rundir, start
from leap_fx.run.rundir import RunDir
from tests.helpers import tiny_options


def _write(out):
    def body():  # what a finished run leaves: its report, model.onnx and slim/
        os.makedirs(os.path.join(out, "slim"))
        open(os.path.join(out, "model.onnx"), "wb").close()
        with open(os.path.join(out, "report.json"), "w") as fh:
            json.dump({"status": "complete"}, fh)
        return {"status": "complete"}
    return body


def test_a_failure_leaves_a_new_out_absent_and_ctrl_c_too(tmp_path):
    out = tmp_path / "run"
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        def body():
            (out / "teacher").mkdir()  # a stage's folder, half written
            (out / "teacher" / "config.json").write_text("{")
            raise exc
        with pytest.raises(type(exc)):
            in_rundir(RunDir(str(out), tiny_options("d.csv", out)), str, body)
        assert not out.exists() or os.listdir(out) == []


def test_a_complete_run_is_returned_without_running_the_body(tmp_path, capsys):
    out = tmp_path / "run"
    opts = tiny_options("d.csv", out)
    assert in_rundir(RunDir(str(out), opts), str, _write(str(out))) == {"status": "complete"}
    again = tiny_options("d.csv", out, resume=True)

    def never():
        raise AssertionError("the body of a complete run ran again")
    assert in_rundir(RunDir(str(out), again), lambda r: "SUMMARY", never)["status"] == "complete"
    assert "already complete" in capsys.readouterr().out


def test_start_sets_the_threads_and_makes_out_absolute(tmp_path):
    import torch
    out, clock = start(tiny_options("d.csv", "rel/run", threads=1))
    assert os.path.isabs(out) and out.endswith(os.path.join("rel", "run")) and torch.get_num_threads() == 1
