"""CoFi: expected size against brute force and against strip, the Lagrangian on a toy, matched layer
distillation, exact fold + strip of a gated model, checkpoint resume, and the whole job on a tiny corpus."""
import copy
import itertools
import json
import os
import warnings

import pytest
import torch

from leap_fx.masks.lifecycle import carriers
from leap_fx.methods import build
from leap_fx.methods.cofi.config import CofiConfig
from leap_fx.methods.cofi.handler import Cofi
from passes.analyze import analyze
from passes.measure import count_flops
from passes.strip import strip
from passes.strip.masked_norm import installed
from tests.conftest import bert_inputs, tiny_bert

torch.set_num_threads(1)


def gated(layers=2, hidden=32, heads=4, ffn=64, target=0.5, unit="density", **kw):
    model = tiny_bert(layers=layers, hidden=hidden, heads=heads, ffn=ffn)
    x = bert_inputs()
    plan = analyze(model, x, residual=True)
    method = build(CofiConfig(target=f"{unit}:{target}", **kw), total_steps=100)
    method.prepare(model, plan)
    return model, x, plan, method


@torch.no_grad()
def set_gates(method, seed=0, low=-4.0, high=4.0):
    g = torch.Generator().manual_seed(seed)
    for o in method.gates.all():
        o.log_alpha.copy_(low + (high - low) * torch.rand(o.grid_shape, generator=g))


def brute_force_kept(plan, model, gates, z):
    """Kept weight elements of the families for 0/1 gates ``z`` (owner id -> tensor), by masking."""
    stream = {(s.weight_name, s.axis) for s in plan.residual.slices}
    total = 0.0
    for key, fam in plan.families.items():
        keep = z[id(gates.granules[key])] * z[id(gates.layers[key])]
        keep = keep.repeat_interleave(getattr(fam, "head_dim", 1))
        for s in fam.slices:
            mod = model.get_submodule(s.fqn)
            w = mod.parametrizations[s.param].original
            other = z[id(gates.hidden)] if (s.weight_name, 1 - s.axis) in stream else torch.ones(w.shape[1 - s.axis])
            total += float((keep[:, None] * other[None, :]).sum())
    return total


def test_expected_size_equals_brute_force_over_every_gate_state():
    model, x, plan, method = gated(layers=1, hidden=4, heads=2, ffn=3)
    set_gates(method, seed=1, low=-3.0, high=3.0)
    gates = method.gates
    owners = gates.all()
    probs = torch.cat([o.keep_prob().detach().reshape(-1) for o in owners])
    assert len(probs) == 2 + 1 + 3 + 1 + 4  # heads, attention layer, neurons, FFN layer, hidden dims
    expected = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=len(probs)):
        b = torch.tensor(bits)
        weight = float(torch.where(b > 0, probs, 1 - probs).prod())
        z, i = {}, 0
        for o in owners:
            z[id(o)] = b[i:i + o.granules].view(o.grid_shape)
            i += o.granules
        expected += weight * brute_force_kept(plan, model, gates, z)
    assert float(method.size.kept().detach()) == pytest.approx(expected, rel=1e-5)
    ones = {id(o): torch.ones(o.grid_shape) for o in owners}
    assert method.size.dense == pytest.approx(brute_force_kept(plan, model, gates, ones))


@pytest.mark.parametrize("unit", ["density", "flops"])
def test_realised_size_is_what_strip_keeps(unit):
    """Deterministic gates -> fold -> strip: the families' weights and encoder FLOPs that remain are
    exactly ``realised()`` of the count (sub-layers with a closed gate cost nothing once replaced)."""
    model, x, plan, method = gated(target=0.5, unit=unit, cost_seq=bert_inputs()["input_ids"].shape[1])
    dense = tiny_bert()  # the same weights, no gates
    set_gates(method, seed=3)
    with torch.no_grad():  # one whole attention sub-layer off, one FFN sub-layer on
        list(method.gates.layers.values())[0].log_alpha.fill_(-4.0)
        list(method.gates.layers.values())[-1].log_alpha.fill_(4.0)
    method.set_phase("finetune")
    realised = method.size.realised()
    assert 0.05 < realised < 0.9
    model.eval()
    with torch.no_grad():
        before = model(**x).logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random gates: "did not settle" is expected here
        method.finalize(model)
    assert not list(carriers(model)) and installed(model, plan.residual)
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, before)  # fold is exact for the deterministic gates
    names = {s.weight_name for f in plan.families.values() for s in f.slices}
    params_dense = sum(dense.get_parameter(n).numel() for n in names)
    flops_dense = count_flops(dense, x, plan)["encoder"]
    rep = strip(model, plan, x, sublayers=True)
    assert rep.max_rel_diff <= 1e-5 and rep.families["residual"]["kept"]
    left = {n for n in names if _has(model, n)}
    if unit == "density":  # density targets count weight elements (CoFi's "params" size)
        assert sum(model.get_parameter(n).numel() for n in left) / params_dense == pytest.approx(realised, abs=1e-9)
    else:
        assert method.size.dense == pytest.approx(flops_dense / x["input_ids"].shape[0])
        assert count_flops(model, x, plan)["encoder"] / flops_dense == pytest.approx(realised, abs=1e-9)


def _has(model, name):
    try:
        model.get_parameter(name)
        return True
    except AttributeError:
        return False


def lagrangian_toy(total, target, seed=0, strength=0.05):
    """Only the gates and the multipliers train: the Lagrangian against a random per-gate task pull."""
    torch.manual_seed(seed)
    model, x, plan, method = gated(layers=4, hidden=64, ffn=128, target=target)
    method.total_steps = total
    groups = [g for g in method.param_groups(model, 1e-3) if g["name"] in ("masks", "lambda_1", "lambda_2")]
    assert [g.get("maximize", False) for g in groups] == [False, True, True]
    opt = torch.optim.AdamW(groups)
    pull = {id(o): torch.rand(o.grid_shape) * strength for o in method.gates.all()}
    seen = []
    for step in range(total):
        method.on_step(model, step)
        if method.phase != "prune":
            continue
        pen, values = method.lagrangian(step)
        task = sum((pull[id(o)] * (1 - o.mask())).sum() for o in method.gates.all())
        opt.zero_grad()
        (pen + task).backward()
        opt.step()
        seen.append(values)
    method.set_phase("finetune")
    return seen, method


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_lagrangian_drives_expected_size_to_the_target(target):
    seen, method = lagrangian_toy(200, target)
    assert seen[0]["expected_density"] > 0.95 and seen[-1]["target_density"] == pytest.approx(target)
    assert seen[-1]["expected_density"] == pytest.approx(target, abs=0.04)
    assert seen[-1]["lambda_2"] > 0  # ascent: lambda_2 only grows while the gap is not 0
    assert method.size.realised() == pytest.approx(target, abs=0.1)


def test_layer_map_distillation_loss_decreases():
    from leap_fx.objectives.layer_match import (
        MatchedLayerKD,
        ordered_match,
        spaced_layers,
    )
    from leap_fx.objectives.outputs import Outputs
    from leap_fx.objectives.tapping import capture
    assert spaced_layers(12) == [2, 5, 8, 11] and spaced_layers(6) == [1, 2, 4, 5] and spaced_layers(2) == [0, 1]
    losses = torch.tensor([[1.0, 0.1, 2.0, 3.0], [0.5, 0.2, 0.3, 0.9]])
    assert ordered_match(losses) == [0, 1]  # row 1 takes 1, row 0 must stay below it
    assert ordered_match(losses, alive=[True, False, True, True]) == [0, 2]
    torch.manual_seed(0)
    teacher, student = tiny_bert(layers=4, seed=1), tiny_bert(layers=2, seed=2)
    blocks = analyze(student, bert_inputs()).blocks()
    t_blocks = analyze(teacher, bert_inputs()).blocks()
    kd = MatchedLayerKD(teacher_layers=2).build(32)
    opt = torch.optim.Adam(list(student.parameters()) + list(kd.parameters()), lr=3e-3)
    x = bert_inputs(batch=4, seq=8)
    labels = torch.tensor([0, 1, 0, 1])
    history = []
    for _ in range(40):
        with capture(student, blocks) as hs:
            out = Outputs(student(**x).logits, hs)
        with torch.no_grad(), capture(teacher, t_blocks) as ht:
            t_out = Outputs(teacher(**x).logits, ht)
        terms = kd(out, t_out, {"labels": labels})
        opt.zero_grad()
        terms["task"].backward()
        opt.step()
        history.append(float(terms["hidden"].detach()))
    assert history[-1] < 0.5 * history[0]
    assert kd.last_match == sorted(kd.last_match) and len(kd.last_match) == 2
    other = MatchedLayerKD(teacher_layers=2).build(32)  # the map is a module: checkpoints carry its tensors
    other.load_state_dict(kd.state_dict())
    assert torch.equal(other.map.weight, kd.map.weight) and not torch.equal(kd.map.weight, torch.eye(32))


def test_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="structured"):
        CofiConfig(target_density=0.5, granularity="hybrid")
    with pytest.raises(ValueError, match="flops:0.5"):
        CofiConfig(target="latency:0.5")
    with pytest.raises(ValueError, match="<= 1"):
        CofiConfig(target_density=0.5, dense_warmup_ratio=0.5, target_warmup_ratio=0.5, finetune_ratio=0.5)
    model = tiny_bert()
    plan = analyze(model, bert_inputs())  # no residual stream in this Plan
    with pytest.raises(ValueError, match="residual=True"):
        build(CofiConfig(target_density=0.5)).prepare(model, plan)


def test_schedule_phases_and_target_ramp():
    m = Cofi(CofiConfig(target_density=0.4, dense_warmup_ratio=0.1, target_warmup_ratio=0.3, finetune_ratio=0.2), 100)
    assert m.bounds() == (10, 40, 80)
    assert [m.phase_at(s) for s in (0, 9, 10, 79, 80, 99)] == ["dense", "dense", "prune", "prune", "finetune",
                                                                 "finetune"]
    assert m.target_sparsity(10) == 0.0 and m.target_sparsity(25) == pytest.approx(0.3)
    assert m.target_sparsity(40) == pytest.approx(0.6) and m.target_sparsity(70) == pytest.approx(0.6)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, 8), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[:, 0] > 50).long()}


def test_resume_continues_exactly(tmp_path):
    """Gates, multipliers, layer map and optimiser state survive a checkpoint: an interrupted run
    resumed ends with the same weights as an uninterrupted one."""
    from leap_fx.spec.train import TrainConfig
    from leap_fx.train import train
    data, teacher = _data(), tiny_bert(seed=5)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, log_every=1, checkpoint_every=3, eval_every=100)
    method_cfg = CofiConfig(target_density=0.5, dense_warmup_ratio=0.1, target_warmup_ratio=0.4, finetune_ratio=0.2)

    def run(out, stop=None, resume=True):
        student = copy.deepcopy(teacher)
        plan = analyze(student, {k: v[:2] for k, v in data.items() if k != "labels"}, residual=True)
        return train(student, teacher, data, None, cfg, method_cfg, plan, out_dir=str(out), quiet=True,
                     stop_after=stop, resume=resume)
    full = run(tmp_path / "a")
    run(tmp_path / "b", stop=3)
    resumed = run(tmp_path / "b")
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    assert [r.get("lambda_2") for r in full.history if r["type"] == "train"] == \
        [r.get("lambda_2") for r in resumed.history if r["type"] == "train"]


@pytest.mark.slow
def test_run_prune_cofi_end_to_end(tmp_path):
    from leap_fx.run.job import run_prune
    from tests.helpers import tiny_options, write_tiny_corpus
    path, tok = write_tiny_corpus(str(tmp_path))
    out = tmp_path / "out"
    rep = run_prune(tiny_options(path, out, method="cofi", epochs=4, target_density=0.4, verbose=False),
                    model=tiny_bert(), tokenizer=tok)
    for name in ("report.json", "model.onnx", "slim", "train", "options.json"):
        assert os.path.exists(out / name), name
    assert rep["method"]["name"] == "cofi" and "expected_density" in rep["method"]["log_keys"]
    assert rep["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert rep["parameters"]["slim"] < rep["parameters"]["dense"]
    assert rep["flops"]["slim_encoder"] < rep["flops"]["dense_encoder"]
    assert "residual" in rep["strip"]
    hist = [json.loads(line) for line in open(out / "train" / "history.jsonl")]
    phases = [r["phase"] for r in hist if r["type"] == "train"]
    assert phases[0] < 1.0 and 1.0 in phases and phases[-1] == 2.0  # dense -> prune -> frozen fine-tune
    assert rep["accuracy"]["pruned"]["test"] >= rep["data"]["majority_test"]


@pytest.mark.parametrize("name", ["vit", "gpt2", "llama", "roberta"])
def test_gated_fold_and_strip_are_exact_on_other_architectures(name):
    """prepare (gates on every family, sub-layer and hidden dim) -> deterministic gates -> fold -> strip:
    the outputs never change, and the realised parameter count is what strip keeps."""
    from tests.passes.builders import MODELS, logits
    model, x = MODELS[name]()
    plan = analyze(model, x, residual=True)
    method = build(CofiConfig(target_density=0.5), total_steps=10)
    method.prepare(model, plan)
    set_gates(method, seed=7, low=-3.0, high=4.0)
    method.set_phase("finetune")
    names = {s.weight_name for f in plan.families.values() for s in f.slices}
    dense = sum(_weight_numel(model, n) for n in names)
    model.eval()
    with torch.no_grad():
        before = logits(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.finalize(model)
    with torch.no_grad():
        torch.testing.assert_close(logits(model, x), before)
    rep = strip(model, plan, x, sublayers=True)
    assert rep.max_rel_diff <= 1e-5 and len(rep.families["residual"]["kept"]) < plan.residual.width
    with torch.no_grad():
        torch.testing.assert_close(logits(model, x), before, rtol=1e-4, atol=1e-5)
    if name != "llama":  # grouped-query attention keeps whole kv groups only: more than the count
        kept = sum(model.get_parameter(n).numel() for n in names if _has(model, n))
        assert kept / dense == pytest.approx(method.size.realised(), abs=1e-9)


def _weight_numel(model, name):
    fqn, _, pname = name.rpartition(".")
    mod = model.get_submodule(fqn)
    return mod.parametrizations[pname].original.numel() if hasattr(mod, "parametrizations") and \
        pname in mod.parametrizations else getattr(mod, pname).numel()


def test_heads_and_neurons_only():
    """prune_hidden=False, prune_layers=False: only head / neuron gates; the stream keeps every dim."""
    model, x, plan, method = gated(prune_hidden=False, prune_layers=False)
    assert method.gates.hidden is None and not method.gates.layers and not installed(model, plan.residual)
    set_gates(method, seed=2)
    method.set_phase("finetune")
    realised = method.size.realised()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.finalize(model)
    rep = strip(model, plan, x, sublayers=True)
    assert len(rep.families["residual"]["kept"]) == 32 and "masked statistics" in rep.families["residual"]["note"]
    names = {s.weight_name for f in plan.families.values() for s in f.slices}
    dense = sum(tiny_bert().get_parameter(n).numel() for n in names)
    kept = sum(model.get_parameter(n).numel() for n in names if _has(model, n))
    assert kept / dense == pytest.approx(realised, abs=1e-9)


@pytest.mark.slow
def test_a_flops_target_counts_flops_at_the_configs_length():
    """The job's ``target="flops:0.4"`` is CoFi's expected size in FLOPs at ``cost_seq`` (leap_fx.costs);
    a density target counts the gated parameters; without a length a FLOPs target is refused."""
    seq = bert_inputs()["input_ids"].shape[1]
    _, _, plan, a = gated(target=0.4, unit="flops", cost_seq=seq)
    assert (a.unit, a.config.kept) == ("flops", 0.4) and a.target_sparsity(10 ** 6) == pytest.approx(0.6)
    _, _, _, longer = gated(target=0.4, unit="flops", cost_seq=4 * seq)
    assert float(longer.size.dense) > float(a.size.dense)  # the S^2 score terms grow with the length
    _, _, _, b = gated(target=0.4)
    assert b.unit == "params" and float(b.size.density()) != pytest.approx(float(a.size.density()))
    with pytest.raises(ValueError, match="cost_seq"):
        gated(target=0.4, unit="flops")
