"""``--help`` does not import torch (it took 7-9 s): the prune parser's option list comes from a cache keyed
by the sources it is read from; messages name CLI flags, not Python keywords."""
import json
import os
import subprocess
import sys

import pytest

from leap_fx import cli, cli_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import sys\nfrom leap_fx.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('TORCH_IMPORTED=' + str('torch' in sys.modules), file=sys.stderr)")


def _help(cache, *argv):
    env = dict(os.environ, PYTHONPATH=ROOT, LEAP_FX_CACHE=str(cache))
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=600,
                         cwd=ROOT, env=env)
    assert "Traceback" not in res.stderr, res.stderr
    return res.stdout, "TORCH_IMPORTED=True" in res.stderr


def test_help_does_not_import_torch(tmp_path):
    text, torch_loaded = _help(tmp_path, "--help")  # cold cache: the top level needs no method
    assert not torch_loaded and "prune" in text and "eval" in text
    first, _ = _help(tmp_path, "prune", "--help")  # builds the cache (may import torch once)
    again, torch_loaded = _help(tmp_path, "prune", "--help")
    assert not torch_loaded and again == first
    assert "--temperature" in again and "[leap" in again and "--keep-checkpoints" in again
    for command in ("eval", "export", "analyze"):
        text, torch_loaded = _help(tmp_path, command, "--help")
        assert not torch_loaded and "--" in text, command


def test_cache_matches_the_registry_and_is_rebuilt_when_bad(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAP_FX_CACHE", str(tmp_path))
    live = cli_spec.build_spec()
    assert live["methods"] and "temperature" in live["method_options"]
    assert [n for n, _ in live["prune_fields"]][:2] == ["model", "data"]
    path = cli_spec.cache_file()
    assert cli_spec.fingerprint()[:20] in path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("{not json")
    assert cli_spec.cached_spec() == json.loads(json.dumps(live))  # rebuilt, not an error
    with open(path) as fh:
        assert json.load(fh) == json.loads(json.dumps(live))
    assert cli_spec.cached_spec() == json.loads(json.dumps(live))  # read back


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


def test_cli_quantize_choices_are_the_options():
    from leap_fx import cli
    from leap_fx.run.options import QUANTIZE
    assert cli.QUANTIZE == QUANTIZE
