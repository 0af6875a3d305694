"""Mixture of experts, strip and masks (issue 25 class 1): expert neurons and whole experts through the mask
carrier, exact strip of the fused tensors, the router and the config, checked against transformers' own
model built with fewer experts."""
import copy

import torch

from leap_fx.masks import FixedMask
from leap_fx.masks.lifecycle import (
    carriers,
    fold,
    magnitudes,
    owners,
    prepare,
    zero_granules,
)
from leap_fx.spec import MaskSpec
from passes.analyze import analyze
from passes.strip import strip
from passes.strip.routing import excluded_experts
from passes.strip.verify import outputs, rel_diff
from tests.models_moe import MOE

FIXED = dict(owner=lambda shape, key, dev: FixedMask(shape, key, dev))


def _layer_key(plan, i=0):
    return next(k for k, f in plan.families.items() if f is plan.experts()[i])


def test_carrier_masks_one_expert_and_whole_experts():
    model, inputs = MOE["mixtral"]()
    plan = analyze(model, inputs)
    dense = copy.deepcopy(model)
    prepare(model, MaskSpec(0.5, "structured"), plan, **FIXED)
    key = _layer_key(plan)
    fam = plan.families[key]
    neuron_key = fam.experts[1]  # expert 1 of layer 0 loses neurons 0 and 5
    owners(model)[neuron_key].set(torch.tensor([0.0 if j in (0, 5) else 1.0 for j in range(24)]))
    owners(model)[key].set(torch.tensor([1.0, 1.0, 0.0, 1.0]))  # whole expert 2 goes
    mags = magnitudes(model)
    names = {n for n, *_ in carriers(model)}
    assert {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj",
            "model.layers.0.mlp.gate.weight"} <= names
    fold(model)
    e = model.model.layers[0].mlp.experts
    ref = dense.model.layers[0].mlp.experts
    want_gu, want_down = ref.gate_up_proj.detach().clone(), ref.down_proj.detach().clone()
    for j in (0, 5):
        want_gu[1, j] = want_gu[1, 24 + j] = 0
        want_down[1, :, j] = 0
    want_gu[2], want_down[2] = 0, 0
    assert torch.equal(e.gate_up_proj, want_gu) and torch.equal(e.down_proj, want_down)
    router = model.model.layers[0].mlp.gate.weight
    assert torch.equal(router[2], torch.zeros(32)) and torch.equal(router[[0, 1, 3]],
                                                                   dense.model.layers[0].mlp.gate.weight[[0, 1, 3]])
    gu, dn = ref.gate_up_proj.detach().abs(), ref.down_proj.detach().abs()
    want = gu[1, :24].sum(1) + gu[1, 24:].sum(1) + dn[1].sum(0)  # one neuron: gate row, up row, down column
    assert torch.allclose(mags[neuron_key], want)


def test_expert_widths_even_out_exactly():
    """Experts keeping 5, 9, 3 and 3 neurons: every expert keeps 12 (9 rounded up to 16 bytes), exactly."""
    model, inputs = MOE["mixtral"]()
    plan = analyze(model, inputs)
    fam = plan.experts()[0]
    g = torch.Generator().manual_seed(1)
    keep = {k: sorted(torch.randperm(24, generator=g)[:n].tolist()) for k, n in zip(fam.experts, (5, 9, 3, 3))}
    zero_granules(model, plan, keep)
    ref = outputs(model, inputs)
    report = strip(model, plan, inputs)
    e = model.model.layers[0].mlp.experts
    assert tuple(e.gate_up_proj.shape) == (4, 24, 32) and tuple(e.down_proj.shape) == (4, 32, 12)
    assert e.intermediate_dim == 12 and model.model.layers[1].mlp.experts.down_proj.shape[2] == 24
    assert rel_diff(ref, outputs(model, inputs)) <= 1e-5 and report.max_rel_diff <= 1e-5
    kept = [report.families[k]["kept"] for k in fam.experts]
    assert all(len(k) == 12 and set(keep[key]) <= set(k) for k, key in zip(kept, fam.experts))
    assert "removable neurons kept" in report.families[fam.experts[2]]["note"]
    slim = report.plan.routed(_layer_key(plan))
    assert [f.width for f in slim] == [12] * 4 and slim[1].down.positions() == list(range(12))


def _hf_with_fewer_experts(dense, gone: dict[int, list[int]], n: int):
    """transformers' own model with ``n`` experts per layer, weights copied from ``dense`` minus ``gone``."""
    cfg = copy.deepcopy(dense.config)
    cfg.num_experts = n
    small = type(dense)(cfg).eval()
    state = dense.state_dict()
    for i, experts in gone.items():
        keep = [e for e in range(dense.config.num_experts) if e not in experts]
        for name in ("gate.weight", "experts.gate_up_proj", "experts.down_proj"):
            state[f"layers.{i}.mlp.{name}"] = state[f"layers.{i}.mlp.{name}"][keep]
    small.load_state_dict(state)
    return small


def test_whole_experts_leave_the_router_and_config_as_transformers_builds_them():
    """Qwen2-MoE (softmax over every expert, no renormalisation): removing experts 1, 4, 6 gives exactly the
    model transformers builds with 5 experts; strip's reference (those logits at -inf) equals it too."""
    model, inputs = MOE["qwen2_moe"]()
    plan = analyze(model, inputs)
    gone = {0: [1, 4, 6], 1: [1, 4, 6]}
    keys = [_layer_key(plan, i) for i in (0, 1)]
    zero_granules(model, plan, {k: [e for e in range(8) if e not in gone[0]] for k in keys})
    marked = copy.deepcopy(model)
    small = _hf_with_fewer_experts(copy.deepcopy(MOE["qwen2_moe"]()[0]), gone, 5)
    with excluded_experts(marked, plan, {k: gone[0] for k in keys}) as missed:
        routed_around = outputs(marked, inputs)
    assert not missed() and rel_diff(outputs(small, inputs), routed_around) <= 1e-5
    assert rel_diff(outputs(small, inputs), outputs(marked, inputs)) > 1e-3  # zeroed experts still take slots
    report = strip(model, plan, inputs)
    assert report.max_rel_diff <= 1e-5 and model.config.num_experts == 5
    mlp = model.layers[0].mlp
    assert (mlp.gate.num_experts, mlp.experts.num_experts, mlp.gate.top_k) == (5, 5, 2)
    dense_state = small.state_dict()
    for name, t in model.state_dict().items():  # the shared expert kept every neuron: same shapes everywhere
        if "mlp" in name:
            assert torch.equal(t, dense_state[name]), name
    assert "num_experts 8 -> 5" in report.families[keys[0]]["note"]
    assert report.plan.families[keys[0]].num_experts == 5 and len(report.plan.routed(keys[0])) == 5
    assert [f.expert for f in report.plan.routed(keys[0])] == list(range(5))


def test_never_fewer_experts_than_top_k():
    model, inputs = MOE["mixtral"]()
    plan = analyze(model, inputs)
    key = _layer_key(plan)
    zero_granules(model, plan, {key: [3]})  # three of four experts marked; top_k is 2
    report = strip(model, plan, inputs)
    assert report.families[key]["kept"] == [2, 3] and "top_k=2 experts must remain" in report.families[key]["note"]
    assert model.model.layers[0].mlp.gate.weight.shape[0] == 2 and report.max_rel_diff <= 1e-5
    assert model.config.num_local_experts == 4  # layer 1 kept its 4: the config cannot say both
    assert "config expert count left at 4" in report.families[key]["note"]


def test_grouped_routing_loses_the_same_number_per_group():
    """GLM-4-MoE (DeepSeek-V3's router: sigmoid, score-correction bias, 2 groups of 4): marking 0, 1, 2 and 5
    removes one per group; the correction bias loses the same entries."""
    model, inputs = MOE["glm4_moe"]()
    plan = analyze(model, inputs)
    key = _layer_key(plan)
    bias = model.layers[1].mlp.gate.e_score_correction_bias.clone()
    zero_granules(model, plan, {key: [3, 4, 6, 7]})
    report = strip(model, plan, inputs)
    assert report.families[key]["kept"] == [1, 2, 3, 4, 6, 7] and "grouped routing" in report.families[key]["note"]
    assert torch.equal(model.layers[1].mlp.gate.e_score_correction_bias, bias[[1, 2, 3, 4, 6, 7]])
    assert model.layers[1].mlp.gate.num_experts == 6 and report.max_rel_diff <= 1e-5
    assert model.config.n_routed_experts == 6


def test_biased_interleaved_experts_strip_exactly():
    """GPT-OSS: [experts, hidden, 2*ffn] with gate / up interleaved, per-expert biases, a router bias, a
    clamped SwiGLU (not in ACTIVATIONS: zero down columns decide)."""
    model, inputs = MOE["gpt_oss"]()
    plan = analyze(model, inputs)
    key = _layer_key(plan)
    fam = plan.families[key]
    keep = {k: list(range(0, 16, 2)) for k in fam.experts}
    keep[key] = [0, 2, 3]
    bias = model.layers[0].mlp.experts.gate_up_proj_bias.detach().clone()
    zero_granules(model, plan, keep)
    report = strip(model, plan, inputs)
    e = model.layers[0].mlp.experts
    assert tuple(e.gate_up_proj.shape) == (3, 32, 16) and tuple(e.gate_up_proj_bias.shape) == (3, 16)
    assert tuple(e.down_proj.shape) == (3, 8, 32) and tuple(e.down_proj_bias.shape) == (3, 32)
    assert tuple(model.layers[0].mlp.router.bias.shape) == (3,) and report.max_rel_diff <= 1e-5
    kept = [p for j in range(0, 16, 2) for p in (2 * j, 2 * j + 1)]  # neuron j: gate 2j, up 2j + 1
    assert torch.equal(e.gate_up_proj_bias[1], bias[2][kept])  # expert 2 is the second one kept


def test_per_expert_tensors_outside_the_experts_go_with_them():
    """A hand-written block: an nn.Linear router with a bias and a per-expert output scale gathered by the chosen
    experts (found by analyze as a coupled routing tensor); ungated, transposed, biased experts."""
    model, inputs = MOE["plain_moe"]()
    plan = analyze(model, inputs)
    key = _layer_key(plan)
    block = model.blocks[0]
    scale, bias = block.scale.detach().clone(), block.router.bias.detach().clone()
    zero_granules(model, plan, {key: [0, 2, 4, 5]})
    report = strip(model, plan, inputs)
    assert report.max_rel_diff <= 1e-5 and block.experts.num_experts == 4 and block.router.out_features == 4
    assert torch.equal(block.scale, scale[[0, 2, 4, 5]]) and torch.equal(block.router.bias, bias[[0, 2, 4, 5]])
    assert tuple(block.experts.up_proj.shape) == (4, 32, 16) and tuple(block.experts.up_proj_bias.shape) == (4, 16)
