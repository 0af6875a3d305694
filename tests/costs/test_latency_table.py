"""Latency lookup table (costs/latency.py) and latency targets, on a tiny BERT (no timing asserted)."""
import pytest
import torch

import leap_fx
from leap_fx.costs import latency as lt
from leap_fx.costs.budget import target_costs
from leap_fx.methods.leap.config import LeapConfig
from leap_fx.methods.leap.regularizer import LeapRegularizer
from passes.analyze import analyze
from tests.conftest import bert_inputs, tiny_bert

FAST = (1, 4)  # warmup, repetitions: the table's structure is tested here, its speed in bench/


@pytest.fixture
def model_plan():
    torch.set_num_threads(1)
    model = tiny_bert(ffn=64)
    return model, analyze(model, bert_inputs())


@pytest.mark.slow
def test_table_is_measured_once_then_cached(model_plan, tmp_path, monkeypatch):
    model, plan = model_plan
    monkeypatch.setattr(lt, "_MEMO", {})
    table = lt.latency_table(model, plan, bert_inputs(), batch=2, seq=8, cache_dir=str(tmp_path), reps=FAST)
    files = list((tmp_path / "latency").iterdir())
    assert [f.name for f in files] == [f"{table.key}.json"]
    assert set(table.curves) == {"attention", "ffn"} and table.layers == {"attention": 2, "ffn": 2}
    for pts in table.curves.values():
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        assert xs == sorted(xs) and xs[-1] == 1.0 and ys[0] == 0.0 and ys == sorted(ys)  # monotone from 0
    costs = table.cost_model(plan, set(plan.families))
    if table.fixed_ms > 0:  # layers add up to the dense time (fixed is clamped at 0 when noise says otherwise)
        assert costs.total == pytest.approx(table.dense_ms)
    assert costs.fixed >= 0 and 0 < costs.floor() <= 1
    monkeypatch.setattr(lt, "_MEMO", {})
    monkeypatch.setattr(lt, "measure", lambda *a, **k: pytest.fail("measured again instead of reading the cache"))
    again = lt.latency_table(model, plan, None, batch=2, seq=8, cache_dir=str(tmp_path))
    assert again == table


def test_key_ignores_masks_and_depends_on_shape_and_batch(model_plan):
    model, plan = model_plan
    key = lt.table_key(model, plan, 2, 8, 2)
    leap_fx.prepare(model, LeapConfig(0.5, "structured"), plan)
    assert lt.table_key(model, plan, 2, 8, 2) == key
    assert lt.table_key(model, plan, 4, 8, 2) != key
    other = tiny_bert(ffn=32)
    assert lt.table_key(other, analyze(other, bert_inputs()), 2, 8, 2) != key
    assert not list(leap_fx.masks.carriers(lt.dense_copy(model)))  # masks removed, original weights


@pytest.mark.slow
def test_latency_target_drives_leaps_R(model_plan, tmp_path, monkeypatch):
    model, plan = model_plan
    monkeypatch.setattr(lt, "_MEMO", {})
    table = lt.latency_table(model, plan, bert_inputs(), batch=2, seq=8, cache_dir=str(tmp_path), reps=FAST)
    # the measured curves depend on the machine's load: R is checked on a fixed table under the same key
    lt._MEMO[table.key] = table = lt.LatencyTable(table.key, 2, 8, table.threads, dense_ms=42.0, fixed_ms=2.0,
                                                 layers=table.layers, curves={k: [[0.0, 0.0], [1.0, 10.0]]
                                                                              for k in table.curves})
    cfg = LeapConfig(target="latency:0.95", granularity="structured", cost_seq=8, cost_batch=2)
    leap_fx.prepare(model, cfg, plan)
    reg = LeapRegularizer.from_config(model, cfg, plan)  # the table comes from memory
    assert reg.costs.unit == "latency" and reg.costs.info["key"] == table.key
    reg()
    assert 0.9 < reg.R <= 1.0  # k = sigmoid(5) keeps every head and all but one neuron per layer
    with pytest.raises(ValueError, match="below what pruning heads and neurons can reach"):
        target_costs(LeapConfig(target="latency:0.01", granularity="structured", cost_seq=8, cost_batch=2),
                     model, plan)
