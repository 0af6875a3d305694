"""save_slim / load_slim: exact round trip of stripped models (per-layer shapes differ)."""
import json
import os

import pytest
import torch

from passes.export.slim_io import (
    MANIFEST,
    WEIGHTS,
    load_slim,
    load_strip_report,
    save_slim,
)
from passes.io import MARKER
from tests import models
from tests.passes.builders import run, stripped


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("name", list(models.ALL))
def test_round_trip_every_architecture(name, tmp_path):
    from transformers import PreTrainedModel
    model, inputs, plan, ref, _, report = stripped(name, seed=21, empty_layer=0)
    hf = isinstance(model, PreTrainedModel)  # found in transformers' registries, else the caller's factory
    out = tmp_path / "slim"
    save_slim(model, out, plan=plan, strip_report=report)
    assert sorted(os.listdir(tmp_path)) == ["slim"]  # no temp dir left behind
    assert sorted(os.listdir(out)) == sorted([MARKER, MANIFEST, WEIGHTS])
    factory = None if hf else (lambda: models.ALL[name]()[0])
    loaded = load_slim(out, factory)
    _same_state(model, loaded)
    if hf:  # the class given by the caller instead of found in transformers' registries
        _same_state(model, load_slim(out, model_class=type(model)))
    assert torch.equal(run(loaded, inputs), run(model, inputs))
    assert (run(loaded, inputs) - ref).abs().max().item() <= 1e-5
    kept = {k: v["kept"] for k, v in report.families.items()}
    assert {k: v["kept"] for k, v in load_strip_report(out).families.items()} == kept


def test_manifest_records_shapes_and_attributes(tmp_path):
    model, inputs, plan, *_, report = stripped("bert", seed=4, empty_layer=1)
    save_slim(model, tmp_path / "m", plan=plan, strip_report=report)
    man = json.loads((tmp_path / "m" / MANIFEST).read_text())
    fam = plan.attention()[1]
    q = man["modules"][fam.q.fqn]["params"]["weight"]["shape"]
    assert q == list(model.get_submodule(fam.q.fqn).weight.shape) and q[0] < 32
    assert man["attributes"][fam.fqn + ".self"]["num_attention_heads"] == len(
        man["strip"]["families"][fam.fqn]["kept"])
    assert man["config"]["num_attention_heads"] == 4  # the dense HF config, as trained
    assert man["model_class"].endswith(":BertForSequenceClassification")
    assert man["strip"]["plan"]["families"][fam.fqn]["num_heads"] == 1


def test_load_into_given_dense_model_and_mismatch(tmp_path):
    model, inputs, plan, *_ = stripped("gpt2", seed=8, empty_layer=None)
    save_slim(model, tmp_path / "g")
    dense, _ = models.gpt2()
    loaded = load_slim(tmp_path / "g", dense)
    assert loaded is dense
    _same_state(model, loaded)
    with pytest.raises(ValueError, match="manifest is for GPT2LMHeadModel"):
        load_slim(tmp_path / "g", models.bert()[0])


def test_non_hf_model_needs_a_factory(tmp_path):
    model, *_ = stripped("hand_block", seed=1, empty_layer=1)
    save_slim(model, tmp_path / "h")
    with pytest.raises(ValueError, match="model_or_factory"):
        load_slim(tmp_path / "h")


def test_overwrite_is_atomic_and_complete(tmp_path):
    a, *_ = stripped("bert", seed=1, empty_layer=0)
    b, *_ = stripped("bert", seed=2, empty_layer=1)
    save_slim(a, tmp_path / "s")
    save_slim(b, tmp_path / "s")
    assert sorted(os.listdir(tmp_path)) == ["s"]
    _same_state(b, load_slim(tmp_path / "s"))


def test_not_a_slim_dir(tmp_path):
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(ValueError, match="not a leap-fx slim"):
        load_slim(tmp_path)


def test_uniform_strip_of_a_config_whose_head_width_is_derived_round_trips(tmp_path):
    """Falcon (multi-query): ``config.head_dim`` is a property (``hidden_size // num_attention_heads``); strip
    must not set the config's head count, or the dense model load_slim builds derives another head width."""
    from transformers import FalconConfig, FalconModel

    from leap_fx.run.roundtrip import roundtrip
    torch.manual_seed(0)
    model = FalconModel(FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     multi_query=True, new_decoder_architecture=False, use_cache=False)).eval()
    inputs = {"input_ids": torch.randint(0, 64, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    rt = roundtrip(model, inputs, str(tmp_path), seed=0, slim=True)
    assert rt.status == "PASS", (rt.stage, rt.reason)
    assert model.config.num_attention_heads == 4 and model.h[0].self_attention.num_heads < 4  # per module only
    assert rt.slim is not None and rt.slim <= 1e-5
