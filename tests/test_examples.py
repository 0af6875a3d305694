"""Every example runs in --quick mode as a user would run it (a subprocess), and does what it says."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


def run_example(name, *args, env=None, timeout=900):
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
                    **(env or {}))
    res = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), "--quick", *args],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [x for x in res.stdout.splitlines() if x.startswith("result: ")][-1]
    return json.loads(line[len("result: "):]), res.stdout


def test_bring_your_own_model(tmp_path):
    result, out = run_example("bring_your_own_model.py", "--out", str(tmp_path))
    assert set(result) == {"vit", "gpt2"}
    for name, r in result.items():
        assert r["max_abs_diff"] <= 1e-4                      # slim ONNX == masked PyTorch model
        assert r["slim_params"] < r["params"]                  # heads and neurons were removed
        assert all(k == 2 for fqn, k in r["kept"].items() if fqn.endswith("attn") or "attention" in fqn)
        assert os.path.getsize(tmp_path / f"{name}.onnx") > 0
    assert "Plan for GPT2LMHeadModel" in out and "c_attn[0:64]" in out


def test_prune_in_your_own_loop(tmp_path):
    """Three tasks by hand (ViT: LEAP in a loop and Kwon; token classifier: Kwon; QA: LEAP): each stripped smaller
    and its ONNX equal to the stripped PyTorch model."""
    result, out = run_example("prune_in_your_own_loop.py", "--out", str(tmp_path))
    assert set(result) == {"vit-leap", "vit-kwon", "token-kwon", "qa-leap"}
    for name, r in result.items():
        assert r["slim_params"] < r["params"] and r["max_abs_diff"] <= 1e-4, (name, r)
        assert os.path.getsize(tmp_path / f"{name}.onnx") > 0


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory):
    """One cache for examples a and b: they share the data and teacher settings, so b reuses a's teacher."""
    return str(tmp_path_factory.mktemp("teacher-cache"))


@pytest.mark.slow
def test_prune_minilm_rotten_tomatoes(tmp_path, teacher_cache):
    result, out = run_example("prune_minilm_rotten_tomatoes.py", "--out", str(tmp_path),
                              env={"LEAP_FX_CACHE": teacher_cache})
    assert abs(result["density"] - 0.3) <= 0.01
    assert result["parity"] <= 1e-4 and os.path.isfile(result["onnx"])
    assert result["test_accuracy"] > 0.5
    assert "Plan for BertForSequenceClassification: 6 attention, 6 feed-forward families" in out


@pytest.mark.slow
def test_prune_with_hf_trainer(tmp_path, teacher_cache):
    result, out = run_example("prune_with_hf_trainer.py", "--out", str(tmp_path),
                              env={"LEAP_FX_CACHE": teacher_cache})
    assert abs(result["density"] - 0.3) <= 0.02
    assert result["parity"] <= 1e-4 and os.path.isfile(result["onnx"])
    assert result["test_accuracy"] > 0.5
