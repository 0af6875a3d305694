"""``--recover STEPS`` (leap_fx/run/lm_recover.py) on a tiny config-built Llama: after a one-shot method the
stripped model is fine-tuned with next-token loss + distillation; that lowers its loss on the training
blocks, keeps the FLOPs, the slim ONNX still matches torch, and ``recover=0`` is the job as before."""
import math
import os
import random

import pytest
import torch

from leap_fx.methods.request import resolve
from leap_fx.run.job import run_prune
from leap_fx.spec.options import PruneOptions
from leap_fx.tasks.causal_lm.config import CausalLMConfig
from leap_fx.tasks.causal_lm.handler import CausalLM
from leap_fx.tasks.causal_lm.kd import lm_loss
from passes.export import load_slim
from tests.lm_models import tiny_tokenizer, tokenizer_lm

WORDS = "the cat sat on the mat and the dog sat on the log a quick brown fox jumps over the lazy dog".split()
STEPS = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmrecover")
    rng = random.Random(1)
    path = d / "corpus.txt"
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(70)) + "\n\n" for _ in range(50)))
    return str(path), tiny_tokenizer(str(d / "tok"))


def _options(corpus_path, out, recover=0, method="kwon", **kw):
    return PruneOptions(task="causal-lm", data=corpus_path, out=str(out), quick=True, threads=1, use_cache=False,
                        task_options={"block_size": 32, "calibration_blocks": 8, "recover": recover},
                        max_train_examples=16, max_eval_examples=4, target="flops:0.6", method=method,
                        lr=3e-3, verbose=False, **kw)


def _train_loss(out_dir, corpus_path, tok, opts) -> float:
    """Mean next-token loss of the run's slim model on the job's training blocks."""
    task = CausalLM(CausalLMConfig(block_size=32, calibration_blocks=8))
    blocks = task.load_data(resolve(opts), tok).blocks["train"]
    slim = load_slim(os.path.join(out_dir, "slim")).eval()
    with torch.no_grad():
        return float(lm_loss(slim(input_ids=blocks), {"input_ids": blocks}))


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    path, tok = corpus
    d = tmp_path_factory.mktemp("runs")
    reps = {}
    for name, steps in (("plain", 0), ("recovered", STEPS)):
        opts = _options(path, d / name, recover=steps)
        reps[name] = (run_prune(opts, model=tokenizer_lm(tok), tokenizer=tok), d / name, opts)
    return reps


@pytest.mark.slow  # the module's runs take 10-30 s on 2 shared cores
def test_recovery_lowers_the_training_loss_and_keeps_flops_and_parity(corpus, runs):
    path, tok = corpus
    plain, plain_dir, opts = runs["plain"]
    rec, rec_dir, rec_opts = runs["recovered"]
    assert rec["recover"]["steps"] == STEPS and rec["recover"]["lr"] == 3e-3
    assert rec["recover"]["blocks"] == 16 and rec["recover"]["batch_size"] == 4  # the quick mode's
    assert _train_loss(rec_dir, path, tok, rec_opts) < _train_loss(plain_dir, path, tok, opts) - 0.05
    assert rec["recover"]["val_loss_before"] == pytest.approx(math.log(plain["perplexity"]["slim_validation"]),
                                                              rel=1e-3)
    assert rec["flops"]["slim_fraction"] == pytest.approx(plain["flops"]["slim_fraction"])  # nothing regrown
    assert rec["parameters"]["slim"] == plain["parameters"]["slim"]
    assert rec["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert rec["perplexity"]["slim"] == pytest.approx(rec["perplexity"]["slim_torch"], rel=1e-4)
    assert any(k.startswith("recover (") for k in rec["timing"]["stages_s"])
    assert os.path.isdir(rec_dir / "train") and rec["history_records"] > 0


@pytest.mark.slow  # the module's runs take 10-30 s on 2 shared cores
def test_recover_zero_is_the_job_as_before(corpus, runs, tmp_path):
    path, tok = corpus
    plain, plain_dir, _ = runs["plain"]
    assert plain["recover"] == {"steps": 0} and plain["history_records"] == 0
    assert not any(k.startswith("recover") for k in plain["timing"]["stages_s"])
    assert not os.path.exists(plain_dir / "train")
    base = PruneOptions(**{**_options(path, tmp_path / "default").to_dict(),
                           "task_options": {"block_size": 32, "calibration_blocks": 8}})  # no recover key at all
    again = run_prune(base, model=tokenizer_lm(tok), tokenizer=tok)
    assert again["perplexity"]["slim"] == plain["perplexity"]["slim"]
    a, b = load_slim(str(tmp_path / "default" / "slim")), load_slim(str(plain_dir / "slim"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_recover_is_refused_for_trained_methods_and_bad_values(corpus, tmp_path):
    path, tok = corpus
    with pytest.raises(ValueError, match="one-shot methods.*--epochs"):
        run_prune(_options(path, tmp_path / "leap", recover=5, method="leap"), model=tokenizer_lm(tok), tokenizer=tok)
    assert not os.path.exists(tmp_path / "leap")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="recover="):
            CausalLMConfig(recover=bad)
