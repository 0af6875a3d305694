"""Every tiny architecture (tests/models.py, 21 of them) through the whole graph side (issue 11).

analyze (strict: every attention / MLP site matched) -> random structured masks on every family
(through the mask carrier: prepare -> fold) -> strip (self-verified) -> export -> onnxruntime parity
<= 1e-4 at several batch sizes and, where the model has a sequence axis, several sequence lengths.
"""
import pytest
import torch

from leap_fx.run.roundtrip import roundtrip
from passes.strip.verify import outputs
from tests import models


def _sizes(parity: dict) -> tuple[set, set]:
    batches = {k.split("x")[0] for k in parity}
    seqs = {k.split("x")[1] for k in parity} - {"-"}
    return batches, seqs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(models.ALL))
def test_round_trip_every_architecture(name, tmp_path):
    model, inputs = models.ALL[name]()
    dense = [t.clone() for t in outputs(model, inputs)]
    rt = roundtrip(model, inputs, str(tmp_path), seed=3)
    assert rt.status == "PASS", f"{rt.stage} ({rt.module}): {rt.reason} -- {rt.hint}"
    exp = models.EXPECTED[name]
    assert rt.families["attention"] == exp["attention"] and rt.families["ffn"] == exp["ffns"]
    assert rt.families["unmatched"] == 0
    assert rt.params[1] < rt.params[0], "half of every family's granules were masked: the model must shrink"
    assert any(v[0] < v[1] for v in rt.kept.values()), rt.kept
    if exp["frozen"]:  # ALiBi heads stay; the neurons still go
        assert rt.families["frozen"] == rt.families["attention"]
    batches, seqs = _sizes(rt.parity)
    assert len(batches) >= 2 and max(rt.parity.values()) <= 1e-4, rt.parity
    has_seq = any(lab != "batch" for ax in rt.dynamic_axes.values() for lab in ax.values())
    assert len(seqs) >= 2 or not has_seq, rt.parity
    assert (tmp_path / "model.onnx").exists() and not (tmp_path / "model.failed.onnx").exists()
    assert len(outputs(model, inputs)) == len(dense)  # the stripped model still runs


def test_random_keep_is_per_plan_key_and_never_empty():
    from leap_fx.run.roundtrip import random_keep
    from passes.analyze import analyze
    model, inputs = models.ALL["t5"]()
    plan = analyze(model, inputs)
    keep = random_keep(plan, 0)
    assert set(keep) == set(plan.families) and all(1 <= len(v) < plan.families[k].granules for k, v in keep.items())
    assert keep == random_keep(plan, 0) and keep != random_keep(plan, 1)


def test_failure_is_reported_with_stage_and_hint(tmp_path):
    """A model whose MLP mixes its neurons (softmax over the features): strict analyze names the site."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Softmax(-1), torch.nn.Linear(16, 8),
                                torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8)).eval()
    rt = roundtrip(model, torch.randn(2, 8), str(tmp_path))
    assert (rt.status, rt.stage) == ("FAIL", "analyze") and "softmax" not in rt.hint
    assert "not elementwise" in rt.reason and "elementwise" in rt.hint
