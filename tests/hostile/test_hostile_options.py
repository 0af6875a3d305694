"""Options files (issue 27): a file sets settings, never actions (a stored overwrite=true or
continue_anyway=true is not replayed, and only an action that would have done something else is named),
and every value in it is checked exactly as the flag would be, with the file named, before --out is
touched."""
import dataclasses
import json

import pytest

from leap_fx import cli
from leap_fx.run.rundir import RunDir
from leap_fx.spec.options import PruneOptions
from tests.helpers import snapshot, tiny_model_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_options")
    csv_path, _, model_dir = tiny_model_folder(folder)
    return folder, csv_path, model_dir


def argv(setup, out, options=None, *extra):
    folder, csv_path, model_dir = setup
    head = ["prune"] + (["--options", str(options)] if options else [])
    return head + ["--model", str(model_dir), "--data", csv_path, "--text-column", "review", "--label-column",
                   "sentiment", "--max-length", "16", "--quiet", "--cache-dir", str(folder / "cache"),
                   "--out", str(out), *extra]


@pytest.fixture
def untouched(monkeypatch):
    """Fail the test if a run gets as far as preparing --out."""
    def opened(self):
        raise AssertionError(f"--out {self.out} was touched")
    monkeypatch.setattr(RunDir, "open", opened)


def write(tmp_path, settings):
    path = tmp_path / "o.json"
    path.write_text(json.dumps(settings))
    return path


def one_line_error(capsys, args):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- the two cases ---------------------------------------------------------------------------------------
def test_a_stored_overwrite_is_not_replayed(setup, tmp_path, capsys):
    out = tmp_path / "ref"
    rd = RunDir(str(out), PruneOptions(out=str(out)))
    rd.check()
    rd.open()
    (out / "report.json").write_text('{"status": "complete"}')
    rd.finish()
    rd.close()
    before = snapshot(out)
    stored = write(tmp_path, {**json.loads((out / "options.json").read_text()), "overwrite": True})
    assert cli.main(argv(setup, out, stored)) == 2
    err = capsys.readouterr().err
    assert f"--options {stored}: overwrite=True not read (actions are given on the command line only)" in err
    assert f"output directory {out} already holds a leap-fx run (complete" in err
    assert snapshot(out) == before


def test_threads_of_a_billion_are_refused_with_nothing_made(setup, tmp_path, capsys, untouched):
    err = one_line_error(capsys, argv(setup, tmp_path / "o", write(tmp_path, {"threads": 10 ** 9})))
    assert "--threads 1000000000 must be between 0 (automatic) and 1024" in err and not (tmp_path / "o").exists()


# -- every value checked as the flag is ----------------------------------------------------------------------
@pytest.mark.parametrize("settings, needle", [
    ({"lr": float("inf")}, "--lr inf must be a finite number"),
    ({"epochs": 1e400}, "--epochs inf must be a finite number"),
    ({"seed": 2 ** 70}, "--seed 1180591620717411303424 must be a whole number between 0 and 4294967295"),
    ({"split_seed": -1}, "--split-seed -1 must be a whole number between 0 and 4294967295"),
    ({"granularity": "diagonal"}, "unknown granularity 'diagonal'"),
    ({"method_options": {"temperature": float("nan")}}, "must be > 0"),
])
def test_a_bad_value_in_a_file_is_named_with_the_file_before_out(setup, tmp_path, capsys, untouched, settings,
                                                                  needle):
    path = write(tmp_path, settings)
    err = one_line_error(capsys, argv(setup, tmp_path / "o", path))
    assert err.startswith(f"leap-fx prune: error: --options {path}: ") and needle in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--lr", "inf"], "--lr inf must be a finite number"),
    (["--seed", str(2 ** 70)], "--seed 1180591620717411303424 must be a whole number between 0 and 4294967295"),
])
def test_the_same_values_as_flags_are_refused_alike(setup, tmp_path, capsys, untouched, flags, needle):
    assert needle in one_line_error(capsys, argv(setup, tmp_path / "o", None, *flags))


def test_a_teacher_model_that_does_not_exist_is_refused_before_out(setup, tmp_path, capsys, untouched):
    path = write(tmp_path, {"teacher_model": str(tmp_path / "no-such-teacher")})
    err = one_line_error(capsys, argv(setup, tmp_path / "o", path))
    assert f"teacher model '{tmp_path / 'no-such-teacher'}' is not a Hugging Face model directory" in err


WRONG = {str: 5, bool: "yes", int: 1.5, float: "fast", dict: [1]}


def _wrong_types():
    import typing
    hints = typing.get_type_hints(PruneOptions)
    for f in dataclasses.fields(PruneOptions):
        if f.metadata.get("action"):
            continue
        hint = hints[f.name]
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        yield f.name, WRONG[base]


@pytest.mark.parametrize("name, value", list(_wrong_types()))
def test_every_setting_of_a_file_is_type_checked_naming_file_and_field(tmp_path, name, value):
    path = write(tmp_path, {name: value})
    with pytest.raises(ValueError, match=rf"^--options {path}: PruneOptions.{name} must be "):
        PruneOptions.settings_from_file(str(path))


# -- actions are never read --------------------------------------------------------------------------------------
def _options(args_list):
    from leap_fx.cli import build_parser
    from leap_fx.cli.prune import Prune
    return Prune.options(build_parser("prune").parse_args(args_list))


def test_continue_anyway_is_an_action_and_allow_many_classes_a_setting(tmp_path, capsys):
    path = write(tmp_path, {"continue_anyway": True, "allow_many_classes": True, "keep_checkpoints": False})
    opts = _options(["prune", "--options", str(path)])
    assert opts.allow_many_classes is True and opts.continue_anyway is False
    err = capsys.readouterr().err.strip()
    assert err == f"leap-fx prune: note: --options {path}: continue_anyway=True not read (actions are given on the " \
                  f"command line only)"  # keep_checkpoints=false is the default: nothing to say
    assert _options(["prune", "--options", str(path), "--continue-anyway"]).continue_anyway is True


def test_a_runs_own_options_json_with_the_same_out_needs_no_note(tmp_path, capsys):
    out = tmp_path / "run"
    path = write(tmp_path, PruneOptions(out=str(out), epochs=3.0).to_dict())
    opts = _options(["prune", "--options", str(path), "--out", str(out), "--resume"])
    assert opts.epochs == 3.0 and opts.resume and capsys.readouterr().err == ""


def test_a_stored_out_and_cache_dir_are_named_and_never_used(tmp_path, capsys):
    """A run's options.json copied elsewhere: its --out and --cache-dir paths are actions, not read."""
    path = write(tmp_path, PruneOptions(out="/elsewhere/run", cache_dir="/elsewhere/cache", epochs=3.0).to_dict())
    opts = _options(["prune", "--options", str(path), "--out", str(tmp_path / "mine")])
    assert opts.out == str(tmp_path / "mine") and opts.cache_dir is None and opts.epochs == 3.0
    err = capsys.readouterr().err
    assert "out='/elsewhere/run'" in err and "cache_dir='/elsewhere/cache'" in err and "not read" in err
