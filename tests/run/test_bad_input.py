"""Bad input to training and the pipeline: a clear error naming what is wrong and the fix, nothing
half-written. Items also covered elsewhere:

- target density outside (0, 1], unknown granularity: tests/test_config.py::test_bad_config_names_the_fix,
  tests/test_pipeline.py::test_bad_options_name_the_fix, tests/test_cli.py::test_bad_input_is_one_line_exit_2
- unknown method: tests/test_train.py::test_train_config_json_round_trip, tests/test_cli.py (argparse choices)
- untraceable model / no family / wrong input type: tests/test_analyze.py::test_untraceable_model_error,
  ::test_no_family_error, ::test_bad_input_types; tests/test_export.py::test_bad_arguments
- data file missing / empty / unknown labels / missing column: tests/test_data.py::test_load_text_file_errors,
  tests/test_cli.py::test_bad_input_in_a_subprocess_has_no_traceback
- NaN loss: tests/test_train.py::test_nan_loss_stops_with_step_and_keeps_last_checkpoint
- output directory holding another run: tests/test_pipeline.py::test_existing_run_is_refused_then_overwritten_or_resumed,
  tests/test_cli.py::test_prune_export_eval_round_trip
- ONNX parity: tests/test_export.py::test_parity_failure_raises_and_leaves_no_good_file
"""
import os

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

import leap_fx
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from leap_fx.train.checkpoint import read_checkpoint
from leap_fx.train.checks import check_forward_inputs
from passes.analyze.inputs import accepted_inputs
from tests import models
from tests.conftest import tiny_bert
from tests.helpers import toy_data

LEAP = leap_fx.LeapConfig(target_density=0.5)


def _cfg(**kw):
    return TrainConfig(**{**dict(max_steps=10, batch_size=16, checkpoint_every=1,
                                 eval_every=100), **kw})


# -- NaN / Inf during training: stop at that step, keep the last good checkpoint ------------------
@pytest.mark.parametrize("what", ["scores", "sigma"])
def test_non_finite_scores_or_sigma_stop_at_their_step(what, tmp_path):
    """The loss stays finite at the bad step: only the S / σ check can catch it."""
    from leap_fx.masks import owners
    model = tiny_bert()
    calls = {"n": 0}

    def poison(optimizer, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            owner = next(iter(owners(model).values()))
            getattr(owner, what).data.view(-1)[0] = float("nan")
    handle = register_optimizer_step_post_hook(poison)
    try:
        with pytest.raises(FloatingPointError, match=rf"non-finite mask parameters.*\.{what}'.*after step 3:.*"
                                                     rf"last good checkpoint: .*checkpoint.pt"):
            train(model, None, toy_data(), None, _cfg(), LEAP, out_dir=str(tmp_path), quiet=True)
    finally:
        handle.remove()
    state = read_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_gradient_stops_before_the_update(tmp_path):
    model = tiny_bert()
    w = model.bert.encoder.layer[1].output.dense.bias
    calls = {"n": 0}

    def nan_grad(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 4 else grad
    w.register_hook(nan_grad)
    with pytest.raises(FloatingPointError, match=r"non-finite gradients at step 4 in "
                                                 r"\['bert.encoder.layer.1.output.dense.bias'\]"):
        train(model, None, toy_data(), None, _cfg(), LEAP, out_dir=str(tmp_path), quiet=True)
    assert torch.isfinite(w).all()  # not updated with the NaN gradient
    assert read_checkpoint(str(tmp_path / "checkpoint.pt"))["step"] == 3


def test_inf_sigma_at_the_first_step_without_out_dir():
    from leap_fx.masks import owners
    model = tiny_bert()

    def blow_up(optimizer, args, kwargs):
        for o in owners(model).values():
            o.sigma.data.fill_(float("-inf"))
    handle = register_optimizer_step_post_hook(blow_up)
    try:
        with pytest.raises(FloatingPointError, match="after step 1: lower mask_lr; no checkpoint was written"):
            train(model, None, toy_data(), None, _cfg(), LEAP, quiet=True)
    finally:
        handle.remove()


# -- inputs the model cannot take ----------------------------------------------------------------
def test_data_key_the_forward_does_not_accept_names_the_accepted_ones(tmp_path):
    data = toy_data()
    data["input_idz"] = data.pop("input_ids")
    with pytest.raises(ValueError, match=r"\['input_idz'\] that BertForSequenceClassification.forward does "
                                         r"not accept; it accepts \['input_ids', 'attention_mask'"):
        train(tiny_bert(), None, data, None, _cfg(), LEAP, out_dir=str(tmp_path / "o"), quiet=True)
    assert not (tmp_path / "o").exists()  # nothing written
    hand, _ = models.hand_block()
    with pytest.raises(ValueError, match=r"does not accept; it accepts \['x'\]"):
        check_forward_inputs(hand, ["input_ids"], "example_inputs")
    assert "output_attentions" in accepted_inputs(tiny_bert())  # HF **kwargs: Unpack[TypedDict] keys
    assert accepted_inputs(type("Any", (nn.Module,), {"forward": lambda self, **kw: kw})()) is None


def test_data_of_the_wrong_type():
    with pytest.raises(ValueError, match="dict of tensors with a 'labels' key"):
        train(tiny_bert(), None, [1, 2, 3], None, _cfg(), LEAP, quiet=True)
    data = toy_data()
    data.pop("labels")
    with pytest.raises(ValueError, match="'labels' key"):
        train(tiny_bert(), None, data, None, _cfg(), LEAP, quiet=True)


@pytest.mark.parametrize("labels, match", [
    (lambda n: torch.arange(n) % 3, r"labels range over \[0, 2\] but the model outputs 2 logits: build "
                                    r"the classifier with num_labels=3"),
    (lambda n: torch.full((n,), -1), r"range over \[-1, -1\]"),
    (lambda n: torch.zeros(n), "integer class indices"),
])
def test_labels_the_model_cannot_predict(labels, match, tmp_path):
    data = toy_data()
    data["labels"] = labels(len(data["labels"]))
    with pytest.raises(ValueError, match=match):
        train(tiny_bert(), None, data, None, _cfg(), LEAP, out_dir=str(tmp_path), quiet=True)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_block_size_not_dividing_a_matrix(tmp_path):
    with pytest.raises(ValueError, match=r"block '5x5' does not divide weight .* Fix: choose a "
                                         r"block_size/granule dividing both dims"):
        train(tiny_bert(), None, toy_data(), None, _cfg(),
              leap_fx.LeapConfig(target_density=0.5, granularity="block", block_size=5),
              out_dir=str(tmp_path / "o"), quiet=True)
    assert not (tmp_path / "o").exists()


class BagOfWords(nn.Module):
    """No attention, no feed-forward block: nothing for structured LEAP to find."""

    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(100, 8), nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.emb(input_ids).mean(1))


def test_structured_pruning_of_a_model_without_families():
    with pytest.raises(ValueError, match="needs a Plan.*no attention or "
                                         "feed-forward family found in BagOfWords"):
        train(BagOfWords(), None, toy_data(), None, _cfg(),
              leap_fx.LeapConfig(target_density=0.5, granularity="structured"), quiet=True)


def test_batch_size_not_divisible_by_the_processes(monkeypatch):
    from leap_fx.train import distributed
    monkeypatch.setattr(distributed.Dist, "current", classmethod(lambda cls: cls(0, 3)))
    with pytest.raises(ValueError, match="batch_size=16 .* not divisible by the 3 processes"):
        train(tiny_bert(), None, toy_data(), None, _cfg(), LEAP, quiet=True)


def test_resume_with_other_settings_is_refused(tmp_path):
    train(tiny_bert(), None, toy_data(), None, _cfg(max_steps=2), LEAP, out_dir=str(tmp_path), quiet=True)
    files = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    with pytest.raises(ValueError, match=r"other settings \(batch_size\).*resume=False"):
        train(tiny_bert(), None, toy_data(), None, _cfg(max_steps=2, batch_size=32), LEAP,
              out_dir=str(tmp_path), quiet=True)
    with pytest.raises(ValueError, match=r"other settings \(block_size, granularity, target_density\)"):
        train(tiny_bert(), None, toy_data(), None, _cfg(max_steps=2), leap_fx.LeapConfig(0.3, "block", 8),
              out_dir=str(tmp_path), quiet=True)
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == files  # nothing rewritten


# -- the pipeline and the command line --------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.helpers import write_tiny_corpus
    return write_tiny_corpus(str(tmp_path_factory.mktemp("corpus")))


def _run(corpus, out, **kw):
    from leap_fx.run.job import run_prune
    from tests.helpers import tiny_options
    path, tok = corpus
    return run_prune(tiny_options(path, out, epochs=1, **kw), model=tiny_bert(), tokenizer=tok,
                     teacher=tiny_bert(seed=3))  # injected teacher: no fine-tune


@pytest.mark.parametrize("kw, match", [
    (dict(granularity="diagonal"), "unknown granularity 'diagonal'"),
    (dict(granularity="block", mask_block_size=0), "mask_block_size=0 must be a positive int"),
    (dict(data="missing.csv"), "data file not found"),
    (dict(validation_data="missing.csv"), "both --validation-data and --test-data"),
])
def test_pipeline_bad_input_writes_nothing(corpus, tmp_path, kw, match):
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        _run(corpus, out, **kw)
    assert not out.exists()  # no options.json: the next run there is not refused


def test_pipeline_block_not_dividing_fails_before_writing_a_report(corpus, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="does not divide weight"):
        _run(corpus, out, granularity="block", mask_block_size=5)
    assert not (out / "report.json").exists() and not (out / "model.onnx").exists()


@pytest.mark.slow
def test_pipeline_parity_failure_leaves_no_good_looking_output(corpus, tmp_path, monkeypatch):
    import passes.export.parity as export_mod
    real = export_mod.ort_outputs
    monkeypatch.setattr(export_mod, "ort_outputs", lambda s, f: real(s, f) + 0.01)
    out = tmp_path / "out"
    with pytest.raises(leap_fx.ParityError, match="NOT written"):
        _run(corpus, out)
    assert not (out / "model.onnx").exists() and not (out / "report.json").exists()
    assert (out / "model.failed.onnx").exists()
    monkeypatch.undo()
    with pytest.raises(ValueError, match="already holds a leap-fx run.*--overwrite.*--resume"):
        _run(corpus, out)
    rep = _run(corpus, out, resume=True)  # the trained checkpoint is reused; export now passes
    assert rep["status"] == "complete" and (out / "model.onnx").exists()


def test_pipeline_nan_stops_at_the_step(corpus, tmp_path):
    with pytest.raises(FloatingPointError, match=r"at step \d+ .*lower the learning rates; no checkpoint"):
        _run(corpus, tmp_path / "out", lr=1e30)
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("error, code, word", [
    (FloatingPointError("non-finite loss (nan) at step 3 (ce=nan, kd=0.0): lower the learning rates"), 1,
     "failed"),
    (ValueError("unknown granularity 'x'"), 2, "error"),
])
def test_cli_training_errors_are_one_line(error, code, word, monkeypatch, capsys):
    from leap_fx import cli

    def boom(options):
        raise error
    monkeypatch.setattr("leap_fx.run.job.run_prune", boom)
    assert cli.main(["prune", "--out", "x"]) == code
    err = capsys.readouterr().err.strip()
    assert err == f"leap-fx prune: {word}: {error}" and "Traceback" not in err


def test_pipeline_tokenizer_inputs_the_model_does_not_take(corpus, tmp_path):
    """DistilBERT takes no token_type_ids, which the BERT tokenizer emits: the error names what it takes."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from leap_fx.run.job import run_prune
    from tests.helpers import tiny_options
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=48, max_position_embeddings=64,
                           dropout=0.0, attention_dropout=0.0, num_labels=2)
    path, tok = corpus
    with pytest.raises(ValueError, match=r"\['token_type_ids'\] that DistilBertForSequenceClassification.forward "
                                         r"does not accept; it accepts \['input_ids', 'attention_mask'"):
        run_prune(tiny_options(path, tmp_path / "o", epochs=1), model=DistilBertForSequenceClassification(cfg),
                  tokenizer=tok, teacher=DistilBertForSequenceClassification(cfg))
    assert not (tmp_path / "o" / "train").exists()


def test_cli_unknown_granularity_fails_fast_in_one_line(corpus, tmp_path, capsys):
    from leap_fx import cli
    path, _ = corpus
    out = tmp_path / "out"
    code = cli.main(["prune", "--data", path, "--text-column", "review", "--label-column", "sentiment",
                     "--granularity", "diagonal", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unknown granularity 'diagonal'" in err and "use one of" in err
    assert not out.exists()
