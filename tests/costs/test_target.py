"""Targets in the user's unit (masks/target.py): parsing, cost models, and every method reading them."""
import copy
import math

import pytest
import torch

import leap_fx
from leap_fx.costs.budget import target_costs
from leap_fx.costs.density import density_costs
from leap_fx.costs.flops import flops_costs
from leap_fx.costs.model import CostModel, PiecewiseLinear, uniform_keep
from leap_fx.masks import owners, zero_granules
from leap_fx.methods.l2_oneshot.config import L2OneShotConfig
from leap_fx.methods.leap.config import LeapConfig
from leap_fx.methods.leap.regularizer import LeapRegularizer
from leap_fx.methods.magnitude.config import MagnitudeConfig
from leap_fx.spec.target import Target
from passes.analyze import analyze
from passes.measure import count_flops
from passes.strip import strip
from tests.conftest import bert_inputs, tiny_bert


def _flops_fraction(dense, slim, plan, seq):
    x = bert_inputs(1, seq)
    return count_flops(slim, x, plan)["encoder"] / count_flops(dense, x, plan)["encoder"]


# -- parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, unit, value", [("flops:0.5", "flops", 0.5), ("density:0.3", "density", 0.3),
                                               (" Latency:0.25 ", "latency", 0.25), ("0.4", "density", 0.4),
                                               (0.3, "density", 0.3)])
def test_parse(text, unit, value):
    t = Target.parse(text)
    assert (t.unit, t.value) == (unit, value) and Target.parse(str(t)) == t


@pytest.mark.parametrize("text, match", [("speed:0.5", "use one of density, flops, latency"),
                                         ("flops:half", "UNIT:FRACTION"), ("flops:0", "outside"),
                                         ("latency:2", "outside")])
def test_parse_errors_name_the_fix(text, match):
    with pytest.raises(ValueError, match=match):
        Target.parse(text)


def test_spec_target_and_target_density_are_one_setting():
    assert LeapConfig(0.3).goal == Target("density", 0.3) == LeapConfig(target="density:0.3").goal
    assert LeapConfig(target="density:0.3").target_density == 0.3  # old readers keep working
    c = LeapConfig(target="flops:0.5", granularity="structured", cost_seq=64)
    assert c.goal == Target("flops", 0.5) and c.target_density is None
    assert LeapConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="disagree"):
        LeapConfig(0.3, target="flops:0.5", granularity="structured")
    with pytest.raises(ValueError, match="granularity='structured'"):
        LeapConfig(target="flops:0.5", granularity="hybrid")
    with pytest.raises(ValueError, match="no target"):
        LeapConfig()


def test_piecewise_linear_value_and_slope():
    f = PiecewiseLinear((1.0, 3.0, 5.0), (0.0, 4.0, 5.0))
    assert f(2.0) == 2.0 and f(4.0) == 4.5 and f(6.0) == 5.5 and f(0.0) == -2.0
    x = torch.tensor(4.0, requires_grad=True)
    f(x).backward()
    assert x.grad.item() == 0.5


# -- cost models -------------------------------------------------------------------------------------
def test_density_costs_are_the_papers_R():
    model = tiny_bert()
    plan = analyze(model, bert_inputs())
    leap_fx.prepare(model, LeapConfig(0.3, "structured"), plan)
    costs = density_costs(model)
    own = owners(model)
    assert costs.total == sum(o.count for o in own.values())
    kept = {k: 1 for k in own}
    assert costs.fraction(kept) == pytest.approx(sum(o.count / o.granules for o in own.values()) / costs.total)


def test_flops_costs_predict_the_stripped_models_measured_flops():
    dense = tiny_bert(ffn=48)
    plan = analyze(dense, bert_inputs())
    seq = 10
    costs = flops_costs(dense, plan, seq)
    keep = {f.fqn: list(range(0, f.granules, 3)) for f in plan.families.values()}
    slim = zero_granules(copy.deepcopy(dense), plan, keep)
    strip(slim, plan, bert_inputs())
    predicted = costs.fraction({k: len(v) for k, v in keep.items()})
    assert predicted == pytest.approx(_flops_fraction(dense, slim, plan, seq), rel=1e-6)


def test_unreachable_target_is_refused_with_the_floor():
    model = tiny_bert()
    plan = analyze(model, bert_inputs())
    with pytest.raises(ValueError, match=r"below what pruning heads and neurons can reach.*ask for flops:0\.\d+"):
        target_costs(LeapConfig(target="flops:0.05", granularity="structured", cost_seq=8), model, plan)
    with pytest.raises(ValueError, match="cost_seq"):
        target_costs(LeapConfig(target="flops:0.5", granularity="structured"), model, plan)


def test_uniform_keep_stays_within_the_budget():
    costs = CostModel("flops", {"a": PiecewiseLinear.linear(1.0, 4), "b": PiecewiseLinear.linear(0.1, 40)},
                      {"a": 4, "b": 40}, fixed=2.0)
    for value in (0.9, 0.6, 0.45):
        k = uniform_keep(costs, value)
        from leap_fx.masks.topk import keep_count
        frac = costs.fraction({"a": keep_count(k, 4), "b": keep_count(k, 40)})
        assert frac <= value + 1e-9
        assert costs.fraction({"a": keep_count(k + 0.01, 4), "b": keep_count(k + 0.01, 40)}) > value - 0.05


# -- methods read the same target --------------------------------------------------------------------
def test_leap_R_in_flops_equals_the_measured_fraction_of_the_stripped_model():
    dense = tiny_bert(ffn=48)
    plan = analyze(dense, bert_inputs())
    cfg = LeapConfig(target="flops:0.5", granularity="structured", cost_seq=8, temperature=1.0)
    model = copy.deepcopy(dense)
    leap_fx.prepare(model, cfg, plan)
    own = owners(model)
    with torch.no_grad():
        for i, o in enumerate(own.values()):
            k = 0.3 + 0.1 * i
            o.sigma.fill_(math.log(k / (1 - k)))
            o.scores.copy_(torch.randn(o.grid_shape))
    reg = LeapRegularizer.from_config(model, cfg, plan)
    reg()
    leap_fx.fold(model)
    strip(model, plan, bert_inputs())
    assert reg.R == pytest.approx(_flops_fraction(dense, model, plan, 8), rel=1e-5)


def test_l2_oneshot_reaches_a_flops_target():
    dense = tiny_bert(layers=2, heads=8, hidden=32, ffn=128)
    plan = analyze(dense, bert_inputs())
    model = copy.deepcopy(dense)
    method = leap_fx.build_method(L2OneShotConfig(target="flops:0.5", cost_seq=8))
    method.prepare(model, plan)
    report = method.calibrate(model)
    slim = method.finalize(model)
    strip(slim, plan, bert_inputs())
    frac = _flops_fraction(dense, slim, plan, 8)
    assert report["flops"] == pytest.approx(frac, rel=1e-6)
    assert 0.5 <= frac <= 0.5 + 0.02  # stops on the first granule past the budget (a head: < 2 pt here)


def test_magnitude_schedule_in_flops_ends_within_the_target():
    from leap_fx.spec.train import TrainConfig
    from leap_fx.train import train
    from tests.helpers import toy_data
    torch.set_num_threads(1)
    dense = tiny_bert(ffn=64)
    plan = analyze(dense, bert_inputs())
    cfg = MagnitudeConfig(target="flops:0.5", granularity="structured", cost_seq=12, prune_warmup_ratio=0.0,
                          prune_cooldown_ratio=0.3)
    res = train(copy.deepcopy(dense), None, toy_data(32), None, TrainConfig(max_steps=6, batch_size=16, lr=1e-3),
                cfg, plan, quiet=True)
    slim = res.model
    strip(slim, plan, bert_inputs())
    frac = _flops_fraction(dense, slim, plan, 12)
    assert 0.4 < frac <= 0.5 + 1e-9


@pytest.mark.slow
def test_leap_flops_target_lands_within_one_point():
    """LEAP structured at flops:0.5 (the job's short-run settings) on a tiny BERT whose heads are each
    < 1 pt of the encoder FLOPs: the stripped model's FLOPs (FlopCounterMode) land within 1 pt."""
    from leap_fx.spec.train import TrainConfig
    from leap_fx.train import train
    from tests.helpers import toy_data
    torch.set_num_threads(1)
    dense = tiny_bert(layers=4, heads=16, hidden=64, ffn=256)
    plan = analyze(dense, bert_inputs())
    cfg = LeapConfig(target="flops:0.5", granularity="structured", cost_seq=12, lambda_min=80.0,
                     score_init="magnitude", mask_lr_scale=0.3)
    res = train(copy.deepcopy(dense), dense, toy_data(), None,
                TrainConfig(epochs=100, max_steps=150, batch_size=16, lr=1e-3, log_every=10), cfg, plan, quiet=True)
    logs = [r for r in res.history if r["type"] == "train"]
    slim = res.model
    strip(slim, plan, bert_inputs())
    frac = _flops_fraction(dense, slim, plan, 12)
    assert abs(frac - 0.5) <= 0.01, (frac, logs[-1]["R"])
    assert logs[-1]["R"] == pytest.approx(frac, abs=1e-4)  # R is the FLOPs fraction of what is kept
