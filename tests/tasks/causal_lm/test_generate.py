"""Generation with onnxruntime + tokenizer (leap_fx/tasks/causal_lm/generate.py), tokens/s of two graphs
interleaved (speed.py), and the standalone example (examples/generate_slim_onnx.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from leap_fx.tasks.causal_lm.generate import (
    GenerationConfig,
    generate,
    generate_ids,
    load_generator,
    next_tokens,
)
from leap_fx.tasks.causal_lm.speed import lm_speed
from passes.export.decoder import LmMetadata, export_decoder
from tests.helpers import ROOT
from tests.lm_models import sharpen, tiny_tokenizer, tokenizer_lm


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run-like folder: model.onnx (tiny Llama, GQA) + tokenizer/ (byte-level BPE with a chat template)."""
    folder = tmp_path_factory.mktemp("lm_run")
    tok = tiny_tokenizer(str(folder / "tokenizer"))
    model = sharpen(tokenizer_lm(tok), 6.0)
    export_decoder(model, str(folder / "model.onnx"), steps=2,
                   metadata=LmMetadata("tokenizer", [tok.eos_token_id], True))
    return folder, model, tok


def _torch_text(model, tok, ids, n):
    out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         do_sample=False, max_new_tokens=n, use_cache=True, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    return out[0, len(ids):].tolist()


def test_greedy_chat_generation_streams_and_matches_torch(run_dir):
    folder, model, tok = run_dir
    lm, tokenizer = load_generator(str(folder))  # the folder: model.onnx + the tokenizer its metadata names
    pieces = []
    res = generate(lm, tokenizer, "the cat sat", GenerationConfig(max_new_tokens=40), chat=True, stream=pieces.append)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "the cat sat"}], add_generation_prompt=True,
                                        tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert res.prompt_tokens == len(ids) and ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    assert res.token_ids == _torch_text(model, tok, ids, 40)
    assert "".join(pieces) == res.text == tokenizer.decode(res.token_ids, skip_special_tokens=True)
    assert len(pieces) > 1 and res.seconds > 0


def test_eos_stops_generation(run_dir):
    folder, _, _ = run_dir
    lm, tokenizer = load_generator(str(folder / "model.onnx"))
    first = generate(lm, tokenizer, "hello world", GenerationConfig(max_new_tokens=5, eos_token_ids=[])).token_ids
    res = generate(lm, tokenizer, "hello world", GenerationConfig(max_new_tokens=5, eos_token_ids=[first[1]]))
    assert res.token_ids == first[:2] and res.stopped_at_eos
    assert not generate(lm, tokenizer, "hello world", GenerationConfig(max_new_tokens=3, eos_token_ids=[])).stopped_at_eos


def test_sampling_is_seeded_and_top_p_narrows_to_greedy(run_dir):
    folder, _, _ = run_dir
    lm, _ = load_generator(str(folder))
    prompt = [[5, 9, 17, 33]]
    draw = lambda **kw: generate_ids(lm, prompt, GenerationConfig(max_new_tokens=12, eos_token_ids=[], **kw))[0][0]  # noqa: E731
    assert draw(sample=True, temperature=1.5, seed=1) == draw(sample=True, temperature=1.5, seed=1)
    assert draw(sample=True, temperature=1.5, seed=1) != draw(sample=True, temperature=1.5, seed=2)
    assert draw(sample=True, temperature=1.5, top_p=1e-9, seed=3) == draw()  # nucleus of one token = argmax
    with pytest.raises(ValueError, match="top_p"):
        draw(sample=True, top_p=0.0)


def test_top_p_sampling_keeps_to_the_nucleus():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    cfg = GenerationConfig(sample=True, top_p=0.7)
    seen = {int(next_tokens(logits, cfg, rng)[0]) for _ in range(300)}
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.7: tokens 2 and 3 are never drawn


def test_speed_measures_two_graphs_interleaved(run_dir, tmp_path):
    folder, model, _ = run_dir
    res = lm_speed({"dense": str(folder / "model.onnx"), "same": str(folder / "model.onnx")}, prompt=16,
                   new_tokens=4, batches=(1, 2), repeats=2, threads=1, spin=False)
    for name in ("dense", "same"):
        m = res["models"][name]
        assert m["prefill_tokens_per_s"]["median"] > 0 and m["prefill_tokens_per_s"]["runs"] == 2
        assert set(m["decode_tokens_per_s"]) == {"1", "2"} and m["decode_tokens_per_s"]["2"]["median"] > 0
    assert set(res["speedup"]["same"]) == {"prefill", "decode_b1", "decode_b2"}


def test_load_generator_names_a_missing_tokenizer(run_dir, tmp_path):
    folder, _, _ = run_dir
    os.link(folder / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_generator(str(tmp_path))


@pytest.mark.slow
def test_standalone_example_generates_what_generate_does(run_dir):
    folder, _, _ = run_dir
    lm, tokenizer = load_generator(str(folder))
    want = generate(lm, tokenizer, "a quick brown fox", GenerationConfig(max_new_tokens=20), chat=True).text
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from leap_fx on the path
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "generate_slim_onnx.py"),
                          str(folder / "model.onnx"), "a quick brown fox", "--chat", "--max-new-tokens", "20"],
                         capture_output=True, text=True, env=env, cwd=str(folder), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.rstrip("\n") == want
    src = open(os.path.join(ROOT, "examples", "generate_slim_onnx.py")).read()
    assert "leap_fx" not in src.replace("leap-fx", "") and "import torch" not in src
