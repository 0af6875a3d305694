"""The Python API writes only what is its own (issue 27): a folder is written only if it is new, empty or
one leap-fx wrote (its leap-fx-files.json lists every file in it); a file only where no directory is;
anything else is refused with a message, and nothing of the user's is moved or deleted."""
import fcntl
import os

import pytest

from passes.export import export_onnx
from passes.export.metadata import written_here
from passes.export.slim_io import save_slim
from passes.io import MARKER, atomic_dir, clean_stale, write_json
from tests.conftest import bert_inputs, tiny_bert
from tests.hostile.test_rundir import snapshot


def test_save_slim_refuses_a_folder_of_the_users(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "data").mkdir()
    (mine / "data" / "a.csv").write_text("x")
    (tmp_path / "only-empty-dirs" / "sub").mkdir(parents=True)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=rf"^save_slim: folder {mine} holds files leap-fx did not write "
                                         r"\(data, thesis.tex\).* never deletes yours; choose a new or empty"):
        save_slim(tiny_bert(), mine)
    with pytest.raises(ValueError, match=r"holds files leap-fx did not write \(sub\)"):
        save_slim(tiny_bert(), tmp_path / "only-empty-dirs")
    assert snapshot(tmp_path) == before  # nothing moved, nothing hidden, nothing added
    assert (tmp_path / "only-empty-dirs" / "sub").is_dir()


def test_save_slim_onto_a_users_file_is_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(ValueError, match=rf"^save_slim: folder {notes} is a file, not a folder; .*the file is left"):
        save_slim(tiny_bert(), notes)
    assert notes.read_text() == "my notes" and os.listdir(tmp_path) == ["notes.txt"]


def test_save_slim_under_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes")
    with pytest.raises(ValueError, match=r"notes.txt is a file, so no folder can be made there"):
        save_slim(tiny_bert(), tmp_path / "notes.txt" / "slim")
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_save_slim_into_its_own_folder_that_now_holds_a_user_file(tmp_path):
    folder = save_slim(tiny_bert(), tmp_path / "slim")
    (tmp_path / "slim" / "README.md").write_text("what this model is")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"was written by leap-fx but now also holds README.md, which leap-fx did "
                                         r"not write; move them out"):
        save_slim(tiny_bert(seed=1), folder)
    assert snapshot(tmp_path) == before


def test_save_slim_replaces_its_own_folder_and_writes_an_empty_one(tmp_path):
    (tmp_path / "empty").mkdir()
    save_slim(tiny_bert(), tmp_path / "empty")
    assert sorted(os.listdir(tmp_path / "empty")) == sorted([MARKER, "manifest.json", "model.safetensors"])
    save_slim(tiny_bert(seed=1), tmp_path / "empty")  # ours: replaced, atomically, no temporaries left
    assert os.listdir(tmp_path) == ["empty"]


def test_save_slim_onto_a_symlink_is_refused_and_its_target_kept(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link"):
        save_slim(tiny_bert(), tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and sorted(os.listdir(tmp_path)) == ["link", "real"]
    assert os.listdir(target) == ["keep.txt"]


def test_export_onnx_onto_a_directory_is_refused_before_exporting(tmp_path):
    folder = tmp_path / "out.onnx"
    folder.mkdir()
    (folder / "x").write_text("mine")
    with pytest.raises(ValueError, match=rf"^export_onnx: path {folder} is a directory; give the path of the file"):
        export_onnx(tiny_bert(), bert_inputs(), str(folder))
    assert os.listdir(folder) == ["x"] and os.listdir(tmp_path) == ["out.onnx"]


def test_export_onnx_never_replaces_a_users_failed_onnx(tmp_path):
    (tmp_path / "m.failed.onnx").write_bytes(b"the user's own file")
    with pytest.raises(ValueError, match=r"m.failed.onnx exists and was not written by leap-fx; export_onnx writes a "
                                         r"rejected graph there and never replaces your files"):
        export_onnx(tiny_bert(), bert_inputs(), str(tmp_path / "m.onnx"))
    assert (tmp_path / "m.failed.onnx").read_bytes() == b"the user's own file"
    assert os.listdir(tmp_path) == ["m.failed.onnx"]


def test_export_onnx_never_deletes_a_users_opt_onnx(tmp_path):
    (tmp_path / "m.opt.onnx").write_bytes(b"mine")
    rep = export_onnx(tiny_bert(), bert_inputs(), str(tmp_path / "m.onnx"))
    assert (tmp_path / "m.opt.onnx").read_bytes() == b"mine"
    assert any("m.opt.onnx was left as it is (not written by leap-fx" in n for n in rep.notes)


@pytest.mark.slow
def test_a_rejected_graph_is_tagged_as_ours_and_removed_by_the_next_good_export(tmp_path, monkeypatch):
    import passes.export.parity as parity
    from passes.export.parity import ParityError
    real = parity.ort_outputs
    monkeypatch.setattr(parity, "ort_outputs", lambda s, f: real(s, f) + 1.0)
    with pytest.raises(ParityError):
        export_onnx(tiny_bert(), bert_inputs(), str(tmp_path / "m.onnx"), exporter="torchscript")
    assert written_here(str(tmp_path / "m.failed.onnx"))
    monkeypatch.undo()
    rep = export_onnx(tiny_bert(), bert_inputs(), str(tmp_path / "m.onnx"), optimize=True)
    assert rep.optimized_path and written_here(rep.optimized_path)
    assert sorted(os.listdir(tmp_path)) == ["m.failed.onnx", "m.onnx", "m.opt.onnx"]  # an old rejected graph: ours


def test_quantize_into_a_directory_is_refused_first(tmp_path):
    from passes.export.quantize import quantize_int8
    src = export_onnx(tiny_bert(), bert_inputs(), str(tmp_path / "m.onnx")).path
    (tmp_path / "q.onnx").mkdir()
    with pytest.raises(ValueError, match=r"^quantize_int8: dst .*q.onnx is a directory"):
        quantize_int8(src, str(tmp_path / "q.onnx"))
    assert os.listdir(tmp_path / "q.onnx") == [] and sorted(os.listdir(tmp_path)) == ["m.onnx", "q.onnx"]


def test_write_json_onto_a_directory_names_it(tmp_path):
    (tmp_path / "report.json").mkdir()
    with pytest.raises(ValueError, match=r"output file .*report.json is a directory"):
        write_json(str(tmp_path / "report.json"), {"a": 1})
    assert os.listdir(tmp_path) == ["report.json"]


def test_clean_stale_removes_what_a_killed_writer_left_not_what_a_live_one_writes(tmp_path):
    dead = tmp_path / ".entry.tmp-abc123"  # atomic_dir's name, no writer holds it
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / ".x.json.k2j3.tmp").write_text("{")
    (tmp_path / ".hidden-user-file").write_text("mine")
    with atomic_dir(str(tmp_path / "live")) as live:
        assert sorted(clean_stale(str(tmp_path))) == [".entry.tmp-abc123", ".x.json.k2j3.tmp"]
        assert os.path.isdir(live)  # being written: left alone
        fd = os.open(live, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == [".hidden-user-file", "live"]
