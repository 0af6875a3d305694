"""Code from a model folder is never run (issue 27), even with `y` on standard input: every load passes
trust_remote_code=False, so transformers' [y/N] prompt is never shown, and a folder whose config or
tokenizer needs its own code is refused by name. Each folder carries a module that would create a
marker file if it were imported."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import tiny_bert
from tests.helpers import write_tiny_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _custom_folder(tmp_path, model_type="evilbert", tokenizer_code=False):
    folder, marker = tmp_path / "custom", tmp_path / "code_ran"
    tiny_bert().save_pretrained(folder)
    write_tiny_corpus(str(tmp_path))[1].save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                       "AutoModelForSequenceClassification": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    if tokenizer_code:
        tok = json.loads((folder / "tokenizer_config.json").read_text())
        tok.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
        (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import BertConfig, BertForSequenceClassification, BertTokenizer\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evilbert'\n"
        "class EvilModel(BertForSequenceClassification):\n    config_class = EvilConfig\n"
        "class EvilTokenizer(BertTokenizer):\n    pass\n")
    return folder, marker


def _run(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", HOME=str(tmp_path / "home"),
               HF_HOME=str(tmp_path / "hf"))
    return subprocess.run([sys.executable, *args], input="y\ny\ny\n", capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def _no_prompt(res):
    text = res.stdout + res.stderr
    assert "[y/N]" not in text and "Do you wish to run the custom code" not in text, text


@pytest.mark.slow  # a CLI subprocess (~15 s under load)
def test_cli_analyze_with_y_on_stdin_runs_no_code(tmp_path):
    folder, marker = _custom_folder(tmp_path)
    res = _run(["-m", "leap_fx", "analyze", "--model", str(folder)], tmp_path)
    _no_prompt(res)
    assert not marker.exists()
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"{folder}: its config.json needs Python code from the folder" in res.stderr
    assert "leap-fx never runs code from a model folder" in res.stderr


@pytest.mark.slow  # one subprocess (~15 s under load): transformers' prompt reads the real stdin
def test_api_loads_with_y_on_stdin_run_no_code(tmp_path):
    folder, marker = _custom_folder(tmp_path)
    calls = [f"load_classifier({str(folder)!r})", f"load_tokenizer({str(folder)!r})",
             f"load_finetuned({str(folder)!r}, ['neg', 'pos'])"]
    script = "import leap_fx.hf.models as m\n" + "".join(
        f"try:\n    m.{c}\nexcept ValueError as e:\n    print('REFUSED', e)\n" for c in calls)
    res = _run(["-c", script], tmp_path)
    _no_prompt(res)
    assert not marker.exists()
    refused = [ln for ln in res.stdout.splitlines() if ln.startswith("REFUSED")]
    assert len(refused) == 3 and all("never runs code from a model folder" in ln for ln in refused), res.stdout


@pytest.mark.slow
def test_tokenizer_code_in_a_known_model_type_is_refused_without_a_prompt(tmp_path):
    folder, marker = _custom_folder(tmp_path, model_type="bert", tokenizer_code=True)
    res = _run(["-c", f"import leap_fx.hf.models as m\ntry:\n    m.load_tokenizer({str(folder)!r})\n"
                      f"except ValueError as e:\n    print('REFUSED', e)"], tmp_path)
    _no_prompt(res)
    assert not marker.exists()
    assert f"REFUSED {folder}: its tokenizer_config.json needs Python code from the folder" in res.stdout


@pytest.mark.slow
def test_a_known_model_type_with_an_auto_map_loads_transformers_own_class(tmp_path):
    folder, marker = _custom_folder(tmp_path, model_type="bert")
    res = _run(["-c", f"import leap_fx.hf.models as m\nmodel, tok = m.load_classifier({str(folder)!r})\n"
                      f"print(type(model).__module__, type(tok).__module__)"], tmp_path)
    _no_prompt(res)
    assert not marker.exists() and res.returncode == 0, res.stderr
    assert res.stdout.split() == ["transformers.models.bert.modeling_bert",
                                  "transformers.models.bert.tokenization_bert"]


@pytest.mark.slow  # a CLI subprocess
def test_cli_eval_of_a_custom_code_folder_with_y_on_stdin_runs_no_code(tmp_path):
    folder, marker = _custom_folder(tmp_path)
    (tmp_path / "data").mkdir()
    csv_path, _ = write_tiny_corpus(str(tmp_path / "data"))
    res = _run(["-m", "leap_fx", "eval", str(folder), "--data", csv_path, "--text-column", "review",
                "--label-column", "sentiment"], tmp_path)
    _no_prompt(res)
    assert not marker.exists()
    assert res.returncode == 2 and "never runs code from a model folder" in res.stderr, res.stderr[-2000:]
