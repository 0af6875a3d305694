"""Baselines in the LEAP loop: magnitude (Zhu & Gupta) and movement (Sanh et al.) with the cubic schedule."""
import pytest
import torch
from torch.nn.utils import parametrize

import leap_fx
from leap_fx.masks import carriers, densities, magnitudes, owners
from leap_fx.methods.magnitude.config import MagnitudeConfig
from leap_fx.methods.movement.config import MovementConfig
from leap_fx.spec.train import TrainConfig
from leap_fx.train import train
from tests.conftest import tiny_bert
from tests.helpers import toy_data

GRANULARITIES = {"unstructured": dict(granularity="unstructured"),
                 "hybrid": dict(granularity="hybrid", block_size=8),
                 "structured": dict(granularity="structured")}


def _governed(model):
    """weight name -> granules of that matrix (the density step of one granule)."""
    out = {}
    for name, _, _, lm in carriers(model):
        out[name] = min(o.granules for o in lm.owners)
    return out


@pytest.mark.parametrize("method", ["magnitude", "movement"])
@pytest.mark.parametrize("gran", sorted(GRANULARITIES))
def test_baseline_reaches_target_density_and_folds(method, gran):
    torch.set_num_threads(1)
    target = 0.4
    model = tiny_bert()
    plan = leap_fx.analyze(model, {k: v[:2] for k, v in toy_data(2).items() if k != "labels"})
    mcfg = {"magnitude": MagnitudeConfig, "movement": MovementConfig}[method](target, **GRANULARITIES[gran])
    cfg = TrainConfig(epochs=100, max_steps=30, batch_size=16, lr=1e-3, log_every=5, eval_every=1000, fold=False)
    res = train(model, tiny_bert(seed=1), toy_data(), None, cfg, mcfg, plan=plan, quiet=True)
    granules = _governed(model)
    dens = densities(model)
    assert dens and set(dens) == set(granules)
    for name, d in dens.items():  # within one granule of the target, never below it
        assert target - 1e-6 <= d <= target + 1.0 / granules[name] + 1e-6, (name, d)
    sched = [r["scheduled_density"] for r in res.history if r["type"] == "train"]
    assert sched[0] > 0.9 and all(a >= b for a, b in zip(sched, sched[1:])) and sched[-1] == target
    own = owners(model).values()
    assert all(not hasattr(o, "sigma") for o in own)  # no threshold: k comes from the schedule
    if method == "magnitude":
        assert all(not o.scores.requires_grad for o in own)  # scores are |W|, never trained
    if method == "movement":
        assert any(o.scores.detach().abs().max().item() > 0 for o in own)  # S learned (STE)
    # fold: plain weights whose zero pattern is the mask
    masks = {n: m.parametrizations.weight[0].mask(m.parametrizations.weight.original.shape, hard=True)
             for n, m in model.named_modules() if parametrize.is_parametrized(m)}
    leap_fx.fold(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    for n, mask in masks.items():
        w = model.get_submodule(n).weight
        assert torch.equal(w[mask == 0], torch.zeros_like(w[mask == 0]))


def test_magnitude_scores_are_granule_sums_of_abs_weights():
    model = tiny_bert()
    leap_fx.prepare(model, MagnitudeConfig(target_density=0.5, granularity="block", block_size=8))
    scores = magnitudes(model)
    w = model.bert.encoder.layer[0].attention.self.query.parametrizations.weight.original
    expected = w.detach().abs().view(4, 8, 4, 8).sum((1, 3))
    assert torch.allclose(scores["bert.encoder.layer.0.attention.self.query.weight"], expected, atol=1e-6)


def test_magnitude_keeps_largest_weights_and_pruned_stay_pruned():
    model = tiny_bert()
    torch.set_num_threads(1)
    mcfg = MagnitudeConfig(target_density=0.25, prune_warmup_ratio=0.0, prune_cooldown_ratio=0.5)
    cfg = TrainConfig(epochs=100, max_steps=20, batch_size=16, lr=0.0, log_every=5, eval_every=1000, fold=True)
    before = model.bert.encoder.layer[1].output.dense.weight.detach().clone()
    train(model, None, toy_data(), None, cfg, mcfg, quiet=True)  # lr 0: weights never change
    after = model.bert.encoder.layer[1].output.dense.weight
    kept = after != 0
    assert float(kept.float().mean()) == pytest.approx(0.25, abs=1 / before.numel())
    assert float(before.abs()[kept].min()) >= float(before.abs()[~kept].max())  # top-|W| survive


def test_magnitude_sums_tied_granules_over_every_member():
    """Structured granules: a head's score is sum |W| over its q/k/v rows and out columns."""
    model = tiny_bert()
    plan = leap_fx.analyze(model, {k: v[:2] for k, v in toy_data(2).items() if k != "labels"})
    leap_fx.prepare(model, MagnitudeConfig(0.5, "structured"), plan)
    fam = plan.attention()[0]
    get = lambda sl: model.get_submodule(sl.fqn).parametrizations.weight.original.detach().abs()  # noqa: E731
    d = fam.head_dim
    expected = torch.stack([get(fam.q)[h * d:(h + 1) * d].sum() + get(fam.k)[h * d:(h + 1) * d].sum()
                            + get(fam.v)[h * d:(h + 1) * d].sum() + get(fam.out)[:, h * d:(h + 1) * d].sum()
                            for h in range(fam.num_heads)])
    assert torch.allclose(magnitudes(model)[fam.fqn], expected, atol=1e-5)


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_l2_oneshot_on_experts_keeps_equal_widths_and_strips_what_it_chose(name):
    """Routed experts' neurons are scored like any neuron; every expert of a layer keeps the same count (one
    fused tensor, one width), so strip removes exactly what L2 chose and the FLOPs stay within the target."""
    from leap_fx.methods import build
    from leap_fx.methods.l2_oneshot.config import L2OneShotConfig
    from passes.analyze import analyze
    from passes.strip import strip
    from tests.models_moe import MOE
    model, inputs = MOE[name]()
    plan = analyze(model, inputs)
    method = build(L2OneShotConfig(target="flops:0.6", cost_seq=int(inputs["input_ids"].shape[1]), cost_batch=1))
    method.prepare(model, plan)
    result = method.calibrate(model)
    assert result["flops"] <= 0.6 + 0.03  # allocate stops once the target is reached: one granule past it at most
    kept = result["kept"]
    for fam in plan.experts():
        assert not any(k for k, f in plan.families.items() if f is fam and k in kept)  # whole experts: not scored
        assert len({kept[k] for k in fam.experts}) == 1
    report = strip(method.finalize(model), plan, inputs)
    assert report.max_rel_diff <= 1e-5
    for fam in plan.experts():
        assert all(len(report.families[k]["kept"]) == kept[k] for k in fam.experts)
