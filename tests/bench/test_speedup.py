"""bench/speedup.py in its tiny mode (config-built BERT): the harness runs end to end and its JSON holds
measured FLOP fractions near the targets, exact strips, ORT parity and finite positive latencies."""
import importlib.util
import json
import math
import os
import sys

import pytest
import torch

import leap_fx
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # a whole run / subprocess per test: CI runs it, `-m "not slow"` skips it


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def speedup():
    return _load("speedup")


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory, speedup):
    out = tmp_path_factory.mktemp("bench") / "speedup.json"
    result = speedup.main(["--tiny", "--out", str(out)])
    with open(out) as fh:
        return result, json.load(fh)


def test_tiny_run_writes_rows_for_every_config_and_batch(tiny_result, speedup):
    result, saved = tiny_result
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    mode = speedup.MODES["tiny"]
    got = {(r["config"], r["batch"]) for r in saved["rows"]}
    labels = [label for label, _ in speedup.TARGETS] + [speedup.FLOOR]
    assert got == {(label, b) for label in labels for b in mode.batches}
    for key in ("torch", "onnxruntime", "date"):
        assert saved["env"][key]
    assert saved["ort"]["intra_op_num_threads"] == 2 and saved["ort"]["inter_op_num_threads"] == 1
    assert "loadavg_1_5_15" in saved["machine_load"]["after"]


def test_latencies_finite_positive_and_ratio_consistent(tiny_result):
    _, saved = tiny_result
    for r in saved["rows"]:
        for key in ("dense_ms", "slim_ms", "speedup", "ideal"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["dense"]["q1"] <= r["dense_ms"] <= r["dense"]["q3"]
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["slim_ms"])
        assert r["ideal"] == pytest.approx(1 / r["flops_fraction"])
        assert r["ratio"] == pytest.approx(r["speedup"] / r["ideal"])
        assert r["linear_model_speedup"] > 0 and math.isfinite(r["fixed_ms"])
    floor = {r["batch"]: r for r in saved["rows"] if r["config"] == "floor"}
    for b, r in floor.items():  # the linear model passes through the floor point exactly
        assert r["linear_model_speedup"] == pytest.approx(r["speedup"])
    for per_batch in saved["samples_ms"].values():
        for ms in (per_batch["wall"], per_batch["cpu"]):
            assert set(ms) == {"dense", "50%", "25%", "floor"}
            assert all(len(v) == len(ms["dense"]) > 0 and min(v) >= 0 for v in ms.values())
        assert min(min(v) for v in per_batch["wall"].values()) > 0


def test_measured_flop_fractions_hit_targets_and_models_shrink(tiny_result):
    _, saved = tiny_result
    fracs = {c["config"]: c for c in saved["configs"]}
    assert fracs["50%"]["flops_fraction"] == pytest.approx(0.50, abs=0.03)
    assert fracs["25%"]["flops_fraction"] == pytest.approx(0.25, abs=0.03)
    for c in saved["configs"]:  # the reported fraction is the counter's measurement of the slim model
        assert c["encoder_flops"] / saved["dense_encoder_flops"] == pytest.approx(c["flops_fraction"])
        assert c["params"] < saved["dense_params"]
        assert c["strip_max_abs_diff_vs_masked"] < 1e-5
    assert fracs["floor"]["params"] < fracs["25%"]["params"] < fracs["50%"]["params"]
    assert fracs["floor"]["heads_per_layer"] == [1, 1] and fracs["floor"]["neurons_per_layer"] == [1, 1]
    assert fracs["floor"]["flops_fraction"] < 0.25


def test_exports_pass_parity(tiny_result):
    _, saved = tiny_result
    assert set(saved["exports"]) == {"dense", "50%", "25%", "floor"}
    for per_batch in saved["ort_vs_torch_max_abs_diff"].values():
        assert max(per_batch.values()) < 1e-4


def test_encoder_flops_counts_attention_matmuls(speedup):
    model, _ = speedup.load_model(tiny=True)
    cfg = model.config
    h, s, f, layers = cfg.hidden_size, 16, cfg.intermediate_size, cfg.num_hidden_layers
    linear = 2 * s * (4 * h * h + 2 * h * f)  # q k v out + up down, 2 FLOPs per MAC
    attention = 2 * 2 * s * s * h  # scores + weighted sum
    plan = leap_fx.analyze(model, speedup.make_inputs(model, 1, 8))
    assert speedup.encoder_flops(model, plan, s) == layers * (linear + attention)
    assert model.config._attn_implementation == "sdpa"  # restored after counting


def test_apply_masks_zeroes_exactly_the_dropped_granules(speedup):
    import leap_fx
    model, _ = speedup.load_model(tiny=True)
    plan = leap_fx.analyze(model, speedup.make_inputs(model, 1, 8))
    keep = {f.fqn: [0, 2] if f.kind == "attention" else list(range(5)) for f in plan.families.values()}
    from leap_fx.masks import zero_granules
    zero_granules(model, plan, keep)
    att = plan.attention()[0]
    q = model.get_parameter(att.q.weight_name)
    out = model.get_parameter(att.out.weight_name)
    d = att.head_dim
    assert q[d:2 * d].abs().sum() == 0 and q[:d].abs().sum() > 0
    assert out[:, 3 * d:].abs().sum() == 0 and out[:, 2 * d:3 * d].abs().sum() > 0
    ffn = plan.feed_forward()[0]
    up, down = model.get_parameter(ffn.up.weight_name), model.get_parameter(ffn.down.weight_name)
    assert up[5:].abs().sum() == 0 and torch.all(up[:5].abs().sum(1) > 0)
    assert down[:, 5:].abs().sum() == 0


def test_distribute_respects_caps_and_total(speedup):
    from bench._random_masks import _distribute
    counts = _distribute(100, [64, 64, 10], [1.2, 0.8, 1.0])
    assert sum(counts) == 100 and all(1 <= c <= cap for c, cap in zip(counts, [64, 64, 10]))
    assert _distribute(3, [64, 64, 64], [1, 1, 1]) == [1, 1, 1]


def test_time_batch_refuses_graphs_that_disagree_with_torch(speedup, monkeypatch):
    model, _ = speedup.load_model(tiny=True)
    monkeypatch.setattr(speedup, "ort_feed", lambda session, inputs: {})
    monkeypatch.setattr(speedup, "ort_vs_torch", lambda m, s, i: 0.5)
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        speedup.time_batch({"dense": model}, {"dense": None}, [], 1, speedup.MODES["tiny"], 0)


def test_common_summary_table_and_atomic_json(tmp_path):
    from types import SimpleNamespace

    from leap_fx.costs import timing as latency
    from leap_fx.run import summary
    from passes import io
    common = SimpleNamespace(summarize=latency.summarize, paired_ratio_median=latency.paired_ratio_median,
                             interleaved_latency=latency.interleaved_latency, format_table=summary.format_table,
                             write_json=io.write_json)
    s = common.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["q1"], s["q3"], s["iqr"], s["n"]) == (3.0, 2.0, 4.0, 2.0, 5)
    assert common.paired_ratio_median([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0
    calls = []
    wall, cpu = common.interleaved_latency({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                           reps=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warmup, then rotated rounds
    assert len(wall["a"]) == len(cpu["b"]) == 3
    table = common.format_table([{"x": "r", "v": 1.234}], [("x", "name", ""), ("v", "value", ".1f")])
    assert table.splitlines()[2].split() == ["r", "1.2"]
    out = tmp_path / "sub" / "r.json"
    common.write_json(str(out), {"k": [1, 2]})
    assert json.loads(out.read_text()) == {"k": [1, 2]} and os.listdir(out.parent) == ["r.json"]


def test_fused_graphs_are_parity_checked_and_timed(tiny_result):
    _, saved = tiny_result
    assert {(r["fusion"], r["config"]) for r in saved["fusion_rows"]} == \
        {(f, c) for f in ("attention", "norms", "gemm") for c in ("50%", "25%", "floor")}
    for per_batch in saved["ort_vs_torch_max_abs_diff"].values():
        assert {"dense+attention", "25%+gemm"} <= set(per_batch) and max(per_batch.values()) < 1e-4
    heads = {c["config"]: c["heads_per_layer"] for c in saved["configs"]}
    for name, info in saved["fused_exports"]["attention"].items():  # every layer its own head count
        assert info["attention_heads"] == (heads.get(name) or [4, 4]), name
    for r in saved["fusion_rows"]:
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["slim_ms"]) and r["speedup_vs_plain_dense"] > 0
