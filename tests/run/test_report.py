"""run/report.py, run/plots.py, passes/measure.py, passes/io.py: counting, densities, kept structure,
atomic files, figures."""
import json
import os

import pytest
import torch

from leap_fx.run import measure as run_measure
from leap_fx.run import plots, summary
from passes import io, measure
from tests.conftest import bert_inputs, tiny_bert

LAYERS, HIDDEN, FFN = 2, 32, 64


@pytest.fixture(scope="module")
def bert_plan():
    import leap_fx
    model = tiny_bert()
    return model, leap_fx.analyze(model, bert_inputs())


def test_blocks_are_the_transformer_layers(bert_plan):
    _, plan = bert_plan
    assert plan.blocks() == ["bert.encoder.layer.0", "bert.encoder.layer.1"]


def test_encoder_flops_match_the_matmul_formula(bert_plan):
    model, plan = bert_plan
    seq = 8
    x = bert_inputs(batch=1, seq=seq)
    per_layer = 4 * 2 * seq * HIDDEN * HIDDEN + 2 * 2 * seq * seq * HIDDEN + 2 * 2 * seq * HIDDEN * FFN
    flops = measure.count_flops(model, x, plan)
    assert flops["encoder"] == LAYERS * per_layer
    assert flops["total"] > flops["encoder"]  # pooler + classifier on top
    assert measure.count_flops(model, x)["encoder"] == flops["total"]  # no plan: whole forward


def test_flops_restore_attention_implementation():
    model = tiny_bert()
    model.set_attn_implementation("sdpa")
    measure.count_flops(model, bert_inputs(1, 8))
    assert model.config._attn_implementation == "sdpa"


def test_count_params_dedupes_and_filters(bert_plan):
    model, plan = bert_plan
    total = sum(p.numel() for p in model.parameters())
    assert measure.count_params(model) == total
    enc = measure.count_params(model, plan.blocks())
    layer = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN * FFN + FFN + HIDDEN + 2 * 2 * HIDDEN  # + 2 LayerNorms
    assert enc == LAYERS * layer
    lin = torch.nn.Linear(4, 4)
    tied = torch.nn.Sequential(lin, lin)
    assert measure.count_params(tied) == 20


def test_matrix_densities_count_zeros_per_slice(bert_plan):
    import copy
    model, plan = bert_plan
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.bert.encoder.layer[1].attention.self.query.weight[:8].zero_()      # one head of q: 1/4
        m.bert.encoder.layer[0].output.dense.weight[:, :16].zero_()          # 16 of 64 down columns
    rows = {(r["layer"], r["role"]): r for r in run_measure.matrix_densities(m, plan)}
    assert rows[(1, "q")]["density"] == pytest.approx(0.75)
    assert rows[(0, "down")]["density"] == pytest.approx(0.75)
    assert rows[(0, "q")]["density"] == 1.0
    assert {r for _, r in rows} == {"q", "k", "v", "out", "up", "down"}
    n = sum(r["numel"] for r in rows.values())
    expect = 1 - (8 * HIDDEN + HIDDEN * 16) / n
    assert run_measure.overall_density(list(rows.values())) == pytest.approx(expect)


def test_kept_structure_reads_the_strip_summary(bert_plan):
    _, plan = bert_plan

    class Summary:
        families = {"bert.encoder.layer.0.attention": {"kept": [0], "placeholder": 0},
                    "bert.encoder.layer.1": {"kept": list(range(10)), "placeholder": None}}
    st = run_measure.kept_structure(Summary(), plan)
    heads = {h["layer"]: h for h in st["heads"]}
    neurons = {n["layer"]: n for n in st["neurons"]}
    assert heads[0]["kept"] == 1 and heads[0]["live"] == 0      # placeholder only
    assert heads[1]["kept"] == heads[1]["live"] == 4            # untouched family
    assert neurons[1]["live"] == 10 and neurons[0]["live"] == FFN


def test_majority_rate():
    assert run_measure.majority_rate([0, 1, 1, 1]) == 0.75
    assert run_measure.majority_rate([2, 2]) == 1.0


def test_write_json_is_atomic(tmp_path):
    path = str(tmp_path / "r.json")
    io.write_json(path, {"a": 1, "t": torch.tensor([1.0, 2.0])})
    assert json.load(open(path)) == {"a": 1, "t": [1.0, 2.0]}
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash mid-write")
    assert json.load(open(path))["a"] == 1          # old content untouched
    assert os.listdir(tmp_path) == ["r.json"]        # no temp file left


def test_read_history(tmp_path):
    p = tmp_path / "history.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.0}\n')
    assert [r["step"] for r in io.read_jsonl(str(p))] == [1, 2]
    assert io.read_jsonl(str(tmp_path / "missing.jsonl")) == []


def _history(n=20, leap=True):
    recs = []
    for s in range(1, n + 1):
        r = {"type": "train", "step": s, "loss": 1.0 / s, "ce": 0.7, "kd": 0.1, "density": 1 - s / (2 * n)}
        if leap:
            r.update({"R": 1 - s / (2 * n), "L_reg": max(0.0, 0.5 - s / n) ** 2, "lambda": 10.0 + 100 / s})
        else:
            r["scheduled_density"] = 1 - s / (2 * n)
        recs.append(r)
    recs.append({"type": "eval", "step": n, "val_accuracy": 0.8, "val_loss": 0.5})
    return recs


@pytest.mark.parametrize("leap", [True, False])
def test_curves_plot_writes_png(tmp_path, leap):
    path = plots.curves_plot(_history(leap=leap), str(tmp_path / "curves.png"), target=0.5)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["curves.png"]
    with pytest.raises(ValueError, match="no training records"):
        plots.curves_plot([{"type": "eval", "step": 1}], str(tmp_path / "x.png"))


def test_density_plot_writes_png(tmp_path, bert_plan):
    model, plan = bert_plan
    rows = run_measure.matrix_densities(model, plan)
    path = plots.density_plot(rows, str(tmp_path / "density.png"), target=0.3)
    assert open(path, "rb").read(4) == b"\x89PNG"
    with pytest.raises(ValueError, match="no per-matrix densities"):
        plots.density_plot([], str(tmp_path / "d.png"))


def test_summary_table_shows_the_numbers():
    rep = {"options": {"method": "leap", "granularity": "hybrid"},
           "density": {"target": 0.3, "achieved": 0.3043, "by_kind": {"attention": 0.35, "ffn": 0.28}},
           "accuracy": {"dense": {"validation": 0.81, "test": 0.8}, "pruned": {"validation": 0.77, "test": 0.76}},
           "data": {"majority_test": 0.52},
           "structure": {"heads": [{"live": 3, "before": 4}, {"live": 2, "before": 4}],
                         "neurons": [{"live": 40, "before": 64}]},
           "parameters": {"dense": 100, "slim": 60}, "flops": {"dense_encoder": 10, "slim_encoder": 5,
                                                              "slim_fraction": 0.5, "seq_len": 16},
           "onnx": {"path": "m.onnx", "parity_max_abs_diff": 1e-6}, "timing": {"total_s": 12.3}}
    text = summary.summary_table(rep)
    for needle in ("0.3043", "0.8000 -> 0.7600", "5/8", "3 2", "40/64", "100 -> 60", "m.onnx", "12.3 s"):
        assert needle in text, needle
