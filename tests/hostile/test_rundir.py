"""--out as a hostile user meets it (issue 12): leap-fx deletes only what a run of its own wrote, keeps
the old run until the new one is complete, holds one lock per --out, and leaves no trace when a new run
fails with nothing to resume. RunDir alone here (no training); whole runs: test_runs.py."""
import os
import subprocess
import sys

import pytest

from leap_fx.run.rundir import LOCK, MANIFEST, PREVIOUS, RunDir, owned
from leap_fx.spec.options import PruneOptions
from tests.helpers import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def opts(out, **kw):
    return PruneOptions(out=str(out), verbose=False, **kw)


def fake_run(out, complete=True, checkpoint=False, **kw):
    """What a run leaves (manifest, options.json, artefacts), through RunDir itself."""
    rd = RunDir(str(out), opts(out, **kw))
    rd.check()
    assert rd.open() is None
    (out / "slim").mkdir()
    (out / "slim" / "model.safetensors").write_bytes(b"weights")
    (out / "model.onnx").write_bytes(b"onnx")
    if checkpoint:
        (out / "train").mkdir()
        (out / "train" / "checkpoint.pt").write_bytes(b"ckpt")
    if complete:
        (out / "report.json").write_text('{"status": "complete"}')
        rd.finish()
    rd.close()



def test_overwrite_refuses_a_folder_that_never_held_a_run(tmp_path):
    out = tmp_path / "mine"
    for name in ("train", "slim", "tokenizer", "teacher"):
        (out / name).mkdir(parents=True)
        (out / name / "data.txt").write_text(name)
    before = snapshot(out)
    for kw in (dict(overwrite=True), dict(resume=True), {}):
        with pytest.raises(ValueError, match=r"holds slim, tokenizer, train, teacher, which no leap-fx run wrote "
                                             r"there: leap-fx never deletes or writes over files it did not write"):
            RunDir(str(out), opts(out, **kw)).check()
    assert snapshot(out) == before


def test_overwrite_deletes_only_the_manifest_entries(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()
    rd = RunDir(str(out), opts(out, overwrite=True))
    rd.check()
    rd.open()
    assert sorted(os.listdir(out / PREVIOUS)) == ["leap-fx-run.json", "model.onnx", "options.json", "report.json",
                                                  "slim"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "data").is_dir()
    (out / "report.json").write_text('{"status": "complete"}')
    rd.finish()
    rd.close()
    assert not (out / PREVIOUS).exists() and (out / "notes.txt").exists() and (out / "data").is_dir()


def test_a_failed_overwrite_with_nothing_to_resume_restores_the_old_run(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    before = snapshot(out)
    rd = RunDir(str(out), opts(out, overwrite=True, target_density=0.5))
    rd.open()
    (out / "teacher").mkdir()  # the new run got as far as this, then failed
    assert "previous run in" in rd.fail()
    rd.close()
    assert snapshot(out) == before  # byte for byte the old run


def test_a_failed_overwrite_with_checkpoints_keeps_both_until_one_completes(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    rd = RunDir(str(out), opts(out, overwrite=True))
    rd.open()
    (out / "train").mkdir()
    (out / "train" / "checkpoint.pt").write_bytes(b"new")
    note = rd.fail()
    rd.close()
    assert "--resume continues it" in note and f"previous run stays in {out / PREVIOUS}" in note
    assert (out / PREVIOUS / "report.json").exists() and not (out / "report.json").exists()
    again = RunDir(str(out), opts(out, overwrite=True))  # a second overwrite drops the unfinished one only
    again.open()
    assert not (out / "train").exists() and (out / PREVIOUS / "report.json").exists()
    again.close()


def test_resume_then_completion_drops_the_previous_run(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    rd = RunDir(str(out), opts(out, overwrite=True))
    rd.open()
    rd.close()  # killed
    res = RunDir(str(out), opts(out, resume=True))
    assert res.open() is None
    (out / "report.json").write_text("{}")
    res.finish()
    res.close()
    assert not (out / PREVIOUS).exists()


def test_second_process_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from leap_fx.spec.options import PruneOptions; from leap_fx.run.rundir import RunDir\n"
        f"rd = RunDir({str(out)!r}, PruneOptions(out={str(out)!r})); rd.open(); print('locked', flush=True); "
        "time.sleep(60)")], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for kw in (dict(overwrite=True), dict(resume=True)):
            with pytest.raises(ValueError, match=rf"--out {out} is in use by another leap-fx run \(pid {holder.pid}, "
                                                 r"started .*\); wait for it to finish"):
                RunDir(str(out), opts(out, **kw)).open()
        assert (out / "options.json").exists()  # the holder's run untouched
    finally:
        holder.kill()
        holder.wait()
    rd = RunDir(str(out), opts(out, overwrite=True))  # the lock dies with its process
    rd.open()
    rd.close()


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    out = tmp_path / "empty"
    rd = RunDir(str(out), opts(out, resume=True))
    assert rd.open() is None
    assert f"--resume: {out} holds no leap-fx run, so there is nothing to resume: starting a new run" in \
        capsys.readouterr().err
    assert (out / "options.json").exists()
    rd.close()


def test_leftover_temporaries_are_cleaned_on_resume(tmp_path):
    out = tmp_path / "run"
    fake_run(out, complete=False, checkpoint=True)
    (out / ".model.onnx.k3j2.tmp.onnx").write_bytes(b"half an export")
    (out / ".slim.tmp-abc").mkdir()
    (out / ".report.json.x.tmp").write_text("{")
    (out / ".hidden-user-file").write_text("mine")
    rd = RunDir(str(out), opts(out, resume=True))
    assert rd.open() is None
    rd.close()
    assert sorted(f for f in os.listdir(out) if f.startswith(".")) == [".hidden-user-file", LOCK]


def test_complete_run_missing_its_onnx_is_not_called_complete(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    os.remove(out / "model.onnx")
    with pytest.raises(ValueError, match=rf"the run in {out} is complete but model.onnx is missing; re-create "
                                         rf"model.onnx with `leap-fx export {out}/slim --out {out}/model.onnx`"):
        RunDir(str(out), opts(out, resume=True)).open()


def test_complete_run_on_resume_returns_its_report(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    rd = RunDir(str(out), opts(out, resume=True))
    assert rd.open() == {"status": "complete"}
    rd.close()


@pytest.mark.parametrize("content, match", [
    ("{not json", r"options file .*options.json cannot be read \(JSONDecodeError"),
    ('{"target_density": "0.3", "method": "leap"}', r"options file .*options.json is not valid \(PruneOptions."
                                                    r"target_density must be float, got str '0.3'\): pass --overwrite"),
])
def test_damaged_options_json_on_resume_names_the_file(tmp_path, content, match):
    out = tmp_path / "run"
    fake_run(out, complete=False)
    (out / "options.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        RunDir(str(out), opts(out, resume=True)).check()


def test_run_of_an_older_leap_fx_is_adopted(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "options.json").write_text(opts(out).to_json())
    (out / "train").mkdir()
    (out / "mine.txt").write_text("x")
    assert sorted(owned(str(out))) == ["options.json", "train"]
    rd = RunDir(str(out), opts(out, resume=True))
    assert rd.open() is None
    rd.close()
    assert (out / MANIFEST).exists()


def test_a_new_run_failing_before_checkpoints_leaves_no_trace(tmp_path):
    out = tmp_path / "new"
    rd = RunDir(str(out), opts(out))
    rd.open()
    (out / "teacher").mkdir()
    assert rd.fail() == f" (no checkpoint yet: --out {out} was left as it was)"
    rd.close()
    assert not out.exists()  # the same command is not refused next time
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("k")
    rd = RunDir(str(existing), opts(existing))
    rd.open()
    rd.fail()
    rd.close()
    assert os.listdir(existing) == ["keep.txt"]


def test_out_that_is_a_file_or_unwritable(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        RunDir(str(f), opts(f)).check()
    with pytest.raises(ValueError, match="--out /proc/leap-fx-out: cannot write there"):
        RunDir("/proc/leap-fx-out", opts("/proc/leap-fx-out")).open()


def test_user_symlink_named_like_an_artifact_is_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(target, out / "slim")
    with pytest.raises(ValueError, match="holds slim, which no leap-fx run wrote there"):
        RunDir(str(out), opts(out, overwrite=True)).check()
    assert (target / "thesis.tex").read_text() == "years of work"


def test_the_manifest_cannot_claim_files_outside_our_names(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    (out / "mine.txt").write_text("x")
    man = (out / MANIFEST).read_text().replace('"entries": [', '"entries": ["mine.txt", "../x", ')
    (out / MANIFEST).write_text(man)
    rd = RunDir(str(out), opts(out, overwrite=True))
    rd.open()
    (out / "report.json").write_text("{}")
    rd.finish()
    rd.close()
    assert (out / "mine.txt").read_text() == "x"


def test_corrupt_report_on_resume_names_the_file(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    (out / "report.json").write_text('{"status": "compl')
    with pytest.raises(ValueError, match=rf"report {out}/report.json cannot be read \(JSONDecodeError.*restore or "
                                         r"delete it"):
        RunDir(str(out), opts(out, resume=True)).open()


def test_damaged_manifest_is_named_not_trusted(tmp_path):
    out = tmp_path / "run"
    fake_run(out)
    (out / MANIFEST).write_text('{"entries": "everything"}')
    with pytest.raises(ValueError, match=rf"run manifest {out}/{MANIFEST} is damaged"):
        RunDir(str(out), opts(out, overwrite=True)).check()
    assert (out / "report.json").exists()


def test_an_aside_interrupted_by_a_kill_is_finished_not_lost(tmp_path):
    """Killed while moving the old run aside: some entries in .leap-fx-previous, the manifest (moved last)
    still in --out. The next --overwrite completes the aside; a failure then restores the whole old run."""
    out = tmp_path / "run"
    fake_run(out)
    before = snapshot(out)
    (out / PREVIOUS).mkdir()
    for name in ("report.json", "slim"):
        os.replace(out / name, out / PREVIOUS / name)
    rd = RunDir(str(out), opts(out, overwrite=True))
    rd.open()
    assert sorted(os.listdir(out / PREVIOUS)) == ["leap-fx-run.json", "model.onnx", "options.json", "report.json",
                                                  "slim"]
    rd.fail()
    rd.close()
    assert snapshot(out) == before
