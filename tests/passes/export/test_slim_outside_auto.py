"""Issue 25, class 7: slim round trip of transformers classes outside the auto mappings.

A class no auto mapping lists (Whisper's encoder) is found by name in transformers' own modeling
modules, nothing else is imported; constructor arguments beyond the config (``add_pooling_layer=False``)
are recorded and used again; a dense model built differently is named, not a bare state-dict error.
"""
import json

import pytest
import torch

from leap_fx.masks.lifecycle import zero_granules
from leap_fx.run.roundtrip import roundtrip
from passes.analyze import analyze
from passes.export.slim_io import MANIFEST, load_slim, save_slim
from passes.strip import strip
from passes.strip.verify import outputs
from tests import models_attn as M
from tests.models_attn import check_structure


def _stripped(name):
    model, inputs = M.ALL[name]()
    plan = analyze(model, inputs, strict=True)
    check_structure(plan, name)
    zero_granules(model, plan, {k: [0, 2] if f.kind == "attention" else list(range(0, f.granules, 3))
                                for k, f in plan.families.items()})
    return model, inputs, plan, strip(model, plan, inputs)


def _edit(path, **changes):
    man = json.loads((path / MANIFEST).read_text())
    man.update(changes)
    (path / MANIFEST).write_text(json.dumps(man))


def test_class_outside_the_auto_mappings_is_found_by_name(tmp_path):
    model, inputs, plan, report = _stripped("whisper_encoder_only")
    save_slim(model, tmp_path / "w", plan=plan, strip_report=report)
    man = json.loads((tmp_path / "w" / MANIFEST).read_text())
    assert man["model_class"] == "transformers.models.whisper.modeling_whisper:WhisperEncoder"
    loaded = load_slim(tmp_path / "w")
    assert type(loaded).__name__ == "WhisperEncoder"
    assert torch.equal(outputs(loaded, inputs)[0], outputs(model, inputs)[0])


def test_constructor_flags_are_kept(tmp_path):
    model, inputs, plan, report = _stripped("bert_no_pooler")
    save_slim(model, tmp_path / "b", plan=plan, strip_report=report)
    assert json.loads((tmp_path / "b" / MANIFEST).read_text())["init_kwargs"] == {"add_pooling_layer": False}
    loaded = load_slim(tmp_path / "b")
    assert loaded.pooler is None and torch.equal(outputs(loaded, inputs)[0], outputs(model, inputs)[0])
    _edit(tmp_path / "b", init_kwargs={})  # as written before: the dense model gets its pooler back
    with pytest.raises(ValueError, match=r"differs from the saved one: it has pooler.dense .*model_or_factory"):
        load_slim(tmp_path / "b", trust_edited=True)


@pytest.mark.parametrize("named", ["os.path:join", "evil.models.bert.modeling_bert:BertModel",
                                   "transformers.models.bert.modeling_bert:os",
                                   "transformers.models.bert.modeling_bert:BertConfig",
                                   "transformers.models..bert:BertModel"])
def test_only_transformers_model_classes_are_resolved(tmp_path, named):
    model, _, plan, report = _stripped("whisper_encoder_only")
    save_slim(model, tmp_path / "w", plan=plan, strip_report=report)
    _edit(tmp_path / "w", model_class=named)
    with pytest.raises(ValueError, match="never imports a class from outside transformers"):
        load_slim(tmp_path / "w", trust_edited=True)


def test_init_kwargs_must_be_boolean_flags(tmp_path):
    model, _, plan, report = _stripped("bert_no_pooler")
    save_slim(model, tmp_path / "b", plan=plan, strip_report=report)
    _edit(tmp_path / "b", init_kwargs={"add_pooling_layer": "__import__('os')"})
    with pytest.raises(ValueError, match="not boolean constructor flags"):
        load_slim(tmp_path / "b", trust_edited=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper_encoder_only", "bert_no_pooler"])
def test_round_trip(name, tmp_path):
    model, inputs = M.ALL[name]()
    rt = roundtrip(model, inputs, str(tmp_path), seed=2, slim=True)  # the class found by name
    assert rt.status == "PASS", f"{rt.stage}: {rt.reason}"
    assert rt.slim <= 1e-5 and max(rt.parity.values()) <= 1e-4 and len(rt.parity) >= 2
