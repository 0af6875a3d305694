"""The language-model job on tiny causal LMs: every method prunes, strips, exports with a KV cache, and
onnxruntime's greedy generation equals torch's on the slim model; the report's perplexity is exp of the
model's own loss; the CLI end to end, with `leap-fx generate`."""
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch

from leap_fx.env.device import choose_device
from leap_fx.run.job import run_prune
from leap_fx.spec.options import PruneOptions
from leap_fx.tasks.causal_lm.generate import GenerationConfig, generate_ids
from leap_fx.tasks.causal_lm.onnx_lm import OnnxLM
from leap_fx.tasks.registry import task_of_model
from passes.export import load_slim
from tests.helpers import ROOT
from tests.lm_models import LMS, tiny_tokenizer, tokenizer_lm

WORDS = "the cat sat on the mat and the dog sat on the log a quick brown fox jumps over the lazy dog".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmjob")
    rng = random.Random(0)
    path = d / "corpus.txt"
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(70)) + "\n\n" for _ in range(50)))
    tok = tiny_tokenizer(str(d / "tok"))
    return str(path), tok, d


def _options(corpus_path, out, **kw):
    base = dict(task="causal-lm", data=corpus_path, out=str(out), quick=True, threads=1, use_cache=False,
                task_options={"block_size": 32, "calibration_blocks": 8}, max_train_examples=16,
                max_eval_examples=4, target="flops:0.6", verbose=False)
    return PruneOptions(**{**base, **kw})


def _greedy_equal(out_dir, tokens=12):
    """onnxruntime's greedy tokens from the run's model.onnx equal torch's from the run's slim model."""
    slim = load_slim(os.path.join(out_dir, "slim")).eval()
    prompt = [[5, 9, 12, 7]]
    with torch.no_grad():
        ids = torch.tensor(prompt)
        ref = slim.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False,
                            min_new_tokens=tokens, eos_token_id=None, pad_token_id=0)[0, len(prompt[0]):].tolist()
    rows, _ = generate_ids(OnnxLM(os.path.join(out_dir, "model.onnx"), threads=1), prompt,
                           GenerationConfig(max_new_tokens=tokens, eos_token_ids=[]))
    return rows[0] == ref, rows[0], ref


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kwon", "leap", "l2-oneshot", "cofi", "random"])
def test_every_method_prunes_exports_and_generates_like_torch(corpus, tmp_path, method):
    path, tok, _ = corpus
    torch.manual_seed(0)
    model = tokenizer_lm(tok)
    extra = {"method_options": {"prune_layers": False}} if method == "cofi" else {}  # 4 steps: keep every layer
    rep = run_prune(_options(path, tmp_path / method, method=method, **extra), model=model, tokenizer=tok)
    assert rep["task"] == "causal-lm" and rep["method"]["name"] == method
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert rep["parameters"]["slim"]["non_embedding"] < rep["parameters"]["dense"]["non_embedding"]
    heads = {r["family"]: r for r in rep["structure"]["heads"]}
    assert all(1 <= r["kept"] <= r["before"] for r in heads.values())
    same, got, want = _greedy_equal(tmp_path / method)
    assert same, (got, want)
    ppl = rep["perplexity"]
    assert math.isfinite(ppl["slim"]) and ppl["slim"] == pytest.approx(ppl["slim_torch"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama_gqa", "qwen3", "gpt2"])
def test_kwon_on_each_layout_keeps_gqa_groups_whole_and_exports(corpus, tmp_path, name):
    path, tok, _ = corpus
    model = LMS[name](vocab=len(tok))
    rep = run_prune(_options(path, tmp_path / name, method="kwon"), model=model, tokenizer=tok)
    assert rep["flops"]["slim_fraction"] <= 0.6 + 0.02
    strip = rep["strip"]["families"]
    for fam in strip.values():  # GQA: what was removed was realisable, nothing masked-but-kept
        assert not fam.get("gqa_kept_zero")
    assert _greedy_equal(tmp_path / name)[0]


def test_report_perplexity_is_exp_of_the_models_own_loss(corpus, tmp_path):
    path, tok, _ = corpus
    rep = run_prune(_options(path, tmp_path / "o", method="l2-oneshot"), model=tokenizer_lm(tok), tokenizer=tok)
    slim = load_slim(str(tmp_path / "o" / "slim")).eval()
    from leap_fx.tasks.causal_lm.data import load_lm_data
    blocks = load_lm_data(tok, path, 32, seed=0).blocks["test"]
    cap = rep["resolved_options"]["max_eval_examples"]
    g = torch.Generator().manual_seed(0)
    blocks = blocks[torch.randperm(blocks.shape[0], generator=g)[:cap].sort().values] if blocks.shape[0] > cap else blocks
    with torch.no_grad():
        losses = [float(slim(input_ids=b[None], labels=b[None]).loss) for b in blocks]  # HF's mean token loss
    assert rep["perplexity"]["slim_torch"] == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-4)


def test_cli_end_to_end_and_generate(corpus, tmp_path):
    path, tok, d = corpus
    folder = d / "model"
    if not folder.exists():
        model = tokenizer_lm(tok)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    assert task_of_model(str(folder)) == "causal-lm"  # read from config.architectures
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "leap_fx", "prune", "--model", str(folder), "--data", path,
                          "--block-size", "32", "--calibration-blocks", "8", "--quick", "--threads", "1",
                          "--max-train-examples", "16", "--max-eval-examples", "4", "--target", "flops:0.7",
                          "--no-cache", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "perplexity (test, onnxruntime)" in res.stdout and "kwon" in res.stdout  # the LM default method
    report = json.loads((out / "report.json").read_text())
    assert report["resolved_options"]["method"] == "kwon" and report["target"]["target"] == "flops:0.7"
    gen = subprocess.run([sys.executable, "-m", "leap_fx", "generate", str(out), "the cat", "--max-new-tokens", "6"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert "6 tokens" in gen.stderr or "stopped at EOS" in gen.stderr


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'"):
            choose_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        choose_device("tpu")
