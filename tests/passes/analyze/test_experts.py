"""Mixture of experts, analysis side (issue 25 classes 1 and 8): what analyze finds in fused experts, the Plan's
JSON round trip, misses reported when the expert matcher is off, FLOPs per routed token."""
import dataclasses
import importlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from passes.analyze import AnalyzeError, Plan, analyze
from passes.analyze.cost import granule_flops, kept_flops
from passes.analyze.plan import EXPERTS, ExpertsFamily, Slice
from passes.hf_experts import batched_experts
from passes.measure import count_flops
from tests import models
from tests.models_moe import MOE, MOE_EXPECTED


def _routed_keys(plan, key):
    return list(plan.families[key].experts)


@pytest.mark.parametrize("name", list(MOE))
def test_plan_matches_the_known_structure(name):
    model, inputs = MOE[name]()
    exp = MOE_EXPECTED[name]
    plan = analyze(model, inputs, strict=True)  # nothing left unmatched
    layers = plan.experts()
    assert len(layers) == exp["moe_layers"]
    for fam in layers:
        assert (fam.num_experts, fam.top_k, fam.groups, fam.width) == (exp["experts"], exp["top_k"], exp["groups"],
                                                                      exp["ffn"])
        assert [c.param for c in fam.coupled] == exp["coupled"]
        assert (fam.router.bias is not None) == exp["router_bias"]
        up = "gate_up_proj" if exp["gated"] else "up_proj"
        assert [m.param for m in fam.members] == [up, "down_proj"] and all(m.axis == 0 for m in fam.members)
        assert all((m.bias is not None) == exp["expert_bias"] for m in fam.members)
        routed = plan.routed(next(k for k, f in plan.families.items() if f is fam))
        assert [f.expert for f in routed] == list(range(exp["experts"]))
        for e, f in enumerate(routed):  # gate and up coupled inside one fused tensor, down's columns
            assert f.router and plan.families[f.router] is fam and f.width == exp["ffn"] and f.layer == fam.layer
            assert (f.gate is not None) == exp["gated"] and f.activation == exp["activation"]
            assert {s.param for s in f.slices} == {up, "down_proj"} and all(s.expert == e for s in f.slices)
            pieces = f.up.positions() + (f.gate.positions() if f.gate is not None else [])
            assert sorted(pieces) == list(range(len(pieces))) and len(pieces) == exp["ffn"] * (1 + exp["gated"])
            assert f.down.positions() == list(range(exp["ffn"]))
    dense = sorted(f.width for f in plan.feed_forward() if not f.router)
    assert dense == sorted(exp["dense"] + [exp["shared"]] * exp["moe_layers"] * (exp["shared"] is not None))
    att = sorted(plan.attention(), key=lambda f: f.layer)
    assert len(att) == exp["attention"]
    assert all((f.num_heads, f.num_kv_heads, bool(f.frozen)) == (exp["heads"], exp["kv_heads"], exp["frozen"])
               for f in att)
    assert "mixture-of-experts layers" in plan.table() and "WARNING" not in plan.table()


@pytest.mark.parametrize("name", ["mixtral", "gpt_oss"])
def test_same_plan_whatever_the_experts_implementation(name):
    """grouped_mm (the CPU default: custom op on sorted rows) and batched_mm (gather + bmm) read the same."""
    model, inputs = MOE[name]()
    plans = []
    for impl in ("grouped_mm", "batched_mm"):
        model.set_experts_implementation(impl)
        plans.append(analyze(model, inputs, strict=True).to_dict())
    assert plans[0] == plans[1]


def test_plan_json_round_trip_and_old_plans_load():
    model, inputs = MOE["glm4_moe"]()
    plan = analyze(model, inputs)
    again = Plan.from_json(plan.to_json())
    assert again.to_dict() == plan.to_dict() and again.table() == plan.table()
    fam = again.experts()[0]
    assert isinstance(fam, ExpertsFamily) and isinstance(fam.router, Slice) and fam.coupled[0].axis == 0
    key = fam.experts[3]
    assert again.families[key].up.expert == 3 and again.families[key].router == plan.families[key].router
    old = analyze(*models.hand_block()).to_dict()  # a Plan written before experts existed: no such fields
    for fd in old["families"].values():
        fd.pop("router", None)
        for v in fd.values():
            if isinstance(v, dict):
                v.pop("expert", None)
    loaded = Plan.from_dict(old)
    assert all(f.router == "" and f.expert is None for f in loaded.feed_forward()) and not loaded.experts()


def test_unmatched_when_the_expert_matcher_is_off(monkeypatch):
    """With no expert projection recognised, every 3-D expert parameter is a loud miss: Plan.unmatched, the
    table's warnings, and strict analyze refuses."""
    experts = importlib.import_module("passes.analyze.experts")  # `passes.analyze` the attribute is the function
    model, inputs = MOE["qwen2_moe"]()
    monkeypatch.setattr(experts, "expert_projections", lambda g: [])
    plan = analyze(model, inputs)
    assert not plan.experts() and all(not f.router for f in plan.feed_forward())
    missed = {u.module + "." + u.reason.split(" ")[2].rpartition(".")[2] for u in plan.unmatched}
    assert missed == {f"layers.{i}.mlp.experts.{p}" for i in (0, 1) for p in ("gate_up_proj", "down_proj")}
    assert all(u.kind == EXPERTS and "read per expert" in u.reason and u.block.startswith("layers.")
               for u in plan.unmatched)
    assert plan.table().count("WARNING") == 4
    with pytest.raises(AnalyzeError, match=r"4 site\(s\).*gate_up_proj"):
        analyze(model, inputs, strict=True)


def test_unmatched_router_names_the_reason(monkeypatch):
    experts = importlib.import_module("passes.analyze.experts")
    model, inputs = MOE["mixtral"]()
    monkeypatch.setattr(experts, "router", lambda g, ids, n: (None, "no router here (test)"))
    plan = analyze(model, inputs)
    assert not plan.experts() and len(plan.unmatched) == 2
    assert all("no router here (test)" in u.reason and u.module.endswith("mlp.experts") for u in plan.unmatched)


def _block_flops(model, inputs, names):
    counter = FlopCounterMode(display=False)
    with batched_experts(model), torch.no_grad(), counter:
        model(**inputs)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    return sum(sum(counts.get(f"{root}.{n}", {}).values()) for n in names)


def test_flops_per_routed_token_match_the_flop_counter():
    """Summed granule costs of a layer's experts (router rows + routed neurons at top_k / E) equal what
    FlopCounterMode counts on the batched_mm experts: exactly top_k experts per token, whatever the routing."""
    model, inputs = MOE["qwen3_moe"]()
    plan = analyze(model, inputs)
    one = {k: v[:1] for k, v in inputs.items()}  # batch 1: granule costs are per example of `seq` tokens
    seq = one["input_ids"].shape[1]
    costs = granule_flops(model, plan, seq)
    key = next(k for k, f in plan.families.items() if f.kind == EXPERTS)
    fam = plan.families[key]
    moe = costs[key].total + sum(costs[k].total for k in fam.experts)
    experts_module = fam.experts and plan.families[fam.experts[0]].fqn
    measured = _block_flops(model, one, [fam.router.fqn, experts_module])
    hidden, k, width = 32, fam.top_k, fam.width
    assert moe == measured == 2 * seq * hidden * fam.num_experts + seq * k * 3 * 2 * hidden * width
    other = {kk: v.flip(1) for kk, v in one.items()}  # other tokens, other routing: the same FLOPs
    assert _block_flops(model, other, [fam.router.fqn, experts_module]) == measured
    total = count_flops(model, one)["total"]  # measure.py switches to batched_mm itself ...
    assert model.config._experts_implementation == "grouped_mm"  # ... and back
    with FlopCounterMode(display=False) as grouped, torch.no_grad():
        model(**one)
    assert grouped.get_total_flops() < total  # grouped_mm's kernel is invisible to the counter
    kept = {kk: f.granules // 2 for kk, f in plan.families.items() if kk in fam.experts}
    assert kept_flops({kk: costs[kk] for kk in fam.experts}, kept) == pytest.approx(
        seq * k * 3 * 2 * hidden * (width // 2))


def test_expert_neuron_cost_is_top_k_over_experts_of_a_dense_neuron():
    model, inputs = MOE["mixtral"]()
    plan = analyze(model, inputs)
    costs = granule_flops(model, plan, 8)
    fam = plan.experts()[0]
    routed = costs[fam.experts[0]]
    assert routed.flops == pytest.approx(2 * 8 * 3 * 32 * fam.top_k / fam.num_experts)
    assert costs[next(k for k, f in plan.families.items() if f is fam)].flops == 2 * 8 * 32
    plain = dataclasses.replace(plan.families[fam.experts[0]], router="")  # the same neuron, run on every token
    assert granule_flops(model, Plan(families={"x": plain, **{k: f for k, f in plan.families.items()
                                                              if f.kind == EXPERTS}}), 8)["x"].flops == \
        pytest.approx(routed.flops * fam.num_experts / fam.top_k)
