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


@pytest.mark.parametrize("config", [RandomConfig(target="flops:0.6", score_seed=3, cost_seq=5),
                                    leap_fx.L2OneShotConfig(target="flops:0.6", cost_seq=5)], ids=["random", "l2"])
def test_head_by_head_methods_keep_what_strip_can_realise_under_gqa(config):
    """Grouped-query attention (4 q heads on 2 kv heads): the kept heads are the same number in every kept kv
    group, so strip removes every masked head and the slim model is within the FLOPs target."""
    from passes.strip import strip
    from tests import models
    model, inputs = models.llama_gqa()
    plan = analyze(model, inputs)
    method = leap_fx.build_method(config)
    method.prepare(model, plan)
    rep = method.calibrate(model)
    masked = {k: int(o.values.sum()) for k, o in owners(model).items() if plan.families[k].kind == "attention"}
    method.finalize(model)
    report = strip(model, plan, inputs)
    for key, kept in masked.items():
        groups = [sum(1 for h in report.families[key]["kept"] if h // 2 == g) for g in range(2)]
        assert len(report.families[key]["kept"]) == max(kept, 1) and len({n for n in groups if n}) == 1, (key, groups)
    assert rep["flops"] <= 0.6 + 1e-9
