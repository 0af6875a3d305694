"""``--help`` reads the plain-data configs (no torch, no cache file) and lists every method's options,
grouped by method; messages name CLI flags, not Python keywords."""
import os
import subprocess
import sys
import time

import pytest

from leap_fx import cli
from leap_fx.cli import prune
from leap_fx.methods.registry import config_class, config_names
from tests.helpers import ROOT

PROBE = ("import sys\nfrom leap_fx.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('TORCH_IMPORTED=' + str('torch' in sys.modules), file=sys.stderr)")


def _help(cache, *argv):
    env = dict(os.environ, PYTHONPATH=ROOT, LEAP_FX_CACHE=str(cache))
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=600,
                         cwd=ROOT, env=env)
    assert "Traceback" not in res.stderr, res.stderr
    return res.stdout, "TORCH_IMPORTED=True" in res.stderr, time.perf_counter() - t0


def test_help_imports_no_torch_and_writes_no_cache(tmp_path):
    text, torch_loaded, _ = _help(tmp_path, "--help")
    assert not torch_loaded and "prune" in text and "eval" in text
    first, torch_loaded, _ = _help(tmp_path, "prune", "--help")
    assert not torch_loaded and "--temperature" in first and "[leap" in first and "--keep-checkpoints" in first
    assert not os.listdir(tmp_path)  # nothing cached: the parser is built from the configs each time
    for command in ("eval", "export", "analyze"):
        text, torch_loaded, _ = _help(tmp_path, command, "--help")
        assert not torch_loaded and "--" in text, command


def test_every_methods_options_are_listed_in_its_group(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    text = capsys.readouterr().out
    table = prune.method_option_fields()
    for name in config_names():  # a method with options of its own has its group (argparse hides empty ones)
        assert (f"{name} options" in text) == any(name in owners for _, _, owners in table.values()), name
    for option, (_, _, owners) in table.items():
        assert "--" + option.replace("_", "-") in text
        assert all(option in config_class(m).__dataclass_fields__ for m in owners)
    assert table["lambda_min"][2][:2] == ["leap", "sparsebert"]  # one flag, every method that has it
    # a method's job defaults are read from its config, not copied into the help text
    assert f"lr {config_class('sparsebert').job.lr:g}" in " ".join(text.split())


def test_method_and_task_options_never_take_a_job_flag():
    """A method's or task's field named like a ``PruneOptions`` field would make argparse refuse to build
    the parser (``--seed`` of the random baseline once did): every flag belongs to one owner kind."""
    import dataclasses

    from leap_fx.spec.options import PruneOptions

    job = {f.name for f in dataclasses.fields(PruneOptions)}
    methods, tasks = set(prune.method_option_fields()), set(prune.task_option_fields())
    assert not (methods & job) and not (tasks & job) and not (methods & tasks), (methods & job, tasks & job)
    cli.build_parser("prune")  # builds


def test_boolean_method_options_parse_true_and_false():
    args = cli.build_parser("prune").parse_args(["prune", "--method", "cofi", "--prune-hidden", "false"])
    assert prune.Prune.options(args).method_options == {"prune_hidden": False}
    with pytest.raises(SystemExit):
        cli.build_parser("prune").parse_args(["prune", "--prune-hidden", "maybe"])


def test_analyze_has_a_description(capsys):
    with pytest.raises(SystemExit):
        cli.main(["analyze", "--help"])
    assert "attention and feed-forward families" in capsys.readouterr().out


@pytest.mark.parametrize("message, expected", [
    ("Pass text_column=/label_column= to choose others.", "Pass --text-column/--label-column to choose others."),
    ("max_length=0 must be > 0", "--max-length 0 must be > 0"),
    ("granularity='x': unknown", "--granularity 'x': unknown"),
    ("model.max_length=3 and foo_threads=2 stay", "model.max_length=3 and foo_threads=2 stay"),
])
def test_messages_name_cli_flags(message, expected):
    assert cli.cli_words(message) == expected


def test_wrong_column_error_names_the_flag(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("sentence,label\n" + "".join(f"x{i},{i % 2}\n" for i in range(20)))
    assert cli.main(["prune", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--text-column" in err and "text_column=" not in err
