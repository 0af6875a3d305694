"""Random structured pruning: seeded, within the target's budget, different seeds differ, one granule kept
per family at least."""
import pytest
import torch

import leap_fx
from leap_fx.masks import owners
from leap_fx.methods.random.config import RandomConfig
from passes.analyze import analyze
from tests.conftest import bert_inputs, tiny_bert


def _kept(seed, target="flops:0.5"):
    model = tiny_bert()
    plan = analyze(model, bert_inputs())
    method = leap_fx.build_method(RandomConfig(target=target, score_seed=seed, cost_seq=8))
    method.prepare(model, plan)
    rep = method.calibrate(model)
    return {k: o.values.detach().clone() for k, o in owners(model).items()}, rep


def test_random_is_seeded_and_meets_the_budget():
    a, rep = _kept(0)
    b, _ = _kept(0)
    c, _ = _kept(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert rep["flops"] <= 0.5 + 1e-9 and rep["flops"] > 0.35
    assert all(v.sum() >= 1 for v in a.values())


def test_random_refuses_unstructured():
    with pytest.raises(ValueError, match="structured"):
        RandomConfig(target_density=0.5, granularity="hybrid")
