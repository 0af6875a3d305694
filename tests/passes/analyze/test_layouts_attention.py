"""Issue 25, classes 3, 4 and 6: latent attention, einsum / sink scores, vision hybrids.

Each tiny model (tests/models_attn.py): the Plan against the known structure (heads, kv heads, per-role
head widths, coupled and shared tensors, FFN widths per layer), then the whole graph side through
``leap_fx.run.roundtrip``: random masks on every family -> fold -> strip (self-verified) -> ONNX ->
onnxruntime parity at several shapes -> save_slim / load_slim with equal outputs.
"""
import pytest
import torch

from leap_fx.masks.lifecycle import zero_granules
from leap_fx.run.roundtrip import roundtrip
from passes.analyze import Plan, analyze
from passes.export.slim_io import load_slim, save_slim
from passes.strip import strip
from passes.strip.verify import outputs
from tests import models_attn as M
from tests.models_attn import check_structure

EXPORT = {  # LongT5 pads to whole blocks for its length: the ONNX keeps the sequence length
    "longt5_tglobal": dict(dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}}),
    "deepseek_v2": dict(onnx=False),  # its rotary multiplies complex numbers (torch.polar): no ONNX exporter has it
}
LAYOUTS = ["deepseek_v3", "deepseek_v2", "minicpm3", "longt5_tglobal", "einsum_relative", "sink_attention", "levit"]


@pytest.mark.parametrize("name", LAYOUTS)
def test_plan_matches_the_known_structure(name):
    model, inputs = M.ALL[name]()
    plan = analyze(model, inputs, strict=True)
    check_structure(plan, name)
    again = Plan.from_json(plan.to_json())
    assert again.to_dict() == plan.to_dict()


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYOUTS)
def test_round_trip(name, tmp_path):
    model, inputs = M.ALL[name]()
    hand = not type(model).__module__.startswith("transformers.")  # rebuilt by its builder, else found by name
    slim = (lambda: M.ALL[name]()[0]) if hand else True
    rt = roundtrip(model, inputs, str(tmp_path), seed=3, slim=slim, **EXPORT.get(name, {}))
    assert rt.status == "PASS", f"{rt.stage} ({rt.module}): {rt.reason}"
    exp = M.EXPECTED[name]
    assert (rt.families["attention"], rt.families["ffn"], rt.families["unmatched"]) == \
        (len(exp["attention"]), len(exp["ffn"]), 0)
    assert rt.params[1] < rt.params[0] and any(k < n for k, n in rt.kept.values())
    assert "slim" in rt.seconds and rt.slim <= 1e-5  # save_slim -> load_slim: the same outputs
    if EXPORT.get(name, {}).get("onnx", True):
        assert len({k.split("x")[0] for k in rt.parity}) >= 2 and max(rt.parity.values()) <= 1e-4, rt.parity


# -- class 3: latent attention ------------------------------------------------------------------------
def test_latent_heads_live_in_q_b_kv_b_and_o_the_rope_key_stays_whole(tmp_path):
    model, inputs = M.deepseek_v3()
    plan = analyze(model, inputs)
    fam = plan.attention()[0]
    nope, rope, dv = 8, 4, 6
    assert (fam.q.fqn, fam.k.fqn, fam.v.fqn, fam.out.fqn) == tuple(
        f"layers.0.self_attn.{p}" for p in ("q_b_proj", "kv_b_proj", "kv_b_proj", "o_proj"))
    per = nope + dv  # kv_b_proj rows per head: k_nope then v
    assert fam.k.positions() == [h * per + i for h in range(4) for i in range(nope)]
    assert fam.v.positions() == [h * per + nope + i for h in range(4) for i in range(dv)]
    assert fam.q.positions() == list(range(4 * (nope + rope)))
    a_proj = model.layers[0].self_attn.kv_a_proj_with_mqa.weight
    rope_rows = a_proj[-rope:].clone()
    keep = {k: [1, 3] for k, f in plan.families.items() if f.kind == "attention"}
    zero_granules(model, plan, keep)
    ref = outputs(model, inputs)
    report = strip(model, plan, inputs)
    attn = model.layers[0].self_attn
    assert attn.q_b_proj.weight.shape[0] == 2 * (nope + rope) and attn.kv_b_proj.weight.shape[0] == 2 * per
    assert attn.o_proj.weight.shape[1] == 2 * dv and torch.equal(attn.kv_a_proj_with_mqa.weight[-rope:], rope_rows)
    assert report.config == {"num_attention_heads": 2, "num_key_value_heads": 2}
    assert model.config.num_attention_heads == 2
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(outputs(model, inputs), ref))
    save_slim(model, tmp_path / "s", plan=plan, strip_report=report)
    loaded = load_slim(tmp_path / "s")  # the saved config builds the slim head count
    assert loaded.config.num_attention_heads == 2 and torch.equal(outputs(loaded, inputs)[0], outputs(model, inputs)[0])


def test_head_counts_that_differ_per_layer_leave_the_config():
    model, inputs = M.minicpm3()
    plan = analyze(model, inputs)
    keys = [k for k, f in plan.families.items() if f.kind == "attention"]
    zero_granules(model, plan, {keys[0]: [0, 1], keys[1]: [2]})
    report = strip(model, plan, inputs)
    assert report.config == {} and model.config.num_attention_heads == 4
    assert [report.families[k]["kept"] for k in keys] == [[0, 1], [2]]


def test_bert_config_keeps_its_head_count_when_uniform():
    """BERT's head width is hidden_size // num_attention_heads: a smaller count there would change it."""
    from tests.models import bert
    model, inputs = bert()
    plan = analyze(model, inputs)
    zero_granules(model, plan, {k: [0, 1] for k, f in plan.families.items() if f.kind == "attention"})
    report = strip(model, plan, inputs)
    assert report.config == {} and model.config.num_attention_heads == 4


# -- class 4: einsum scores, sink columns ---------------------------------------------------------------
def test_sink_columns_are_coupled_and_sliced_with_their_heads():
    model, inputs = M.sink_attention()
    plan = analyze(model, inputs)
    fam = plan.attention()[0]
    (sink,) = fam.coupled
    assert (sink.weight_name, sink.axis, sink.size) == ("layers.0.attn.sinks", 0, 4)
    before = model.layers[0].attn.sinks.detach().clone()
    keep = {k: ([0, 1] if f.kind == "attention" else list(range(f.granules))) for k, f in plan.families.items()}
    zero_granules(model, plan, keep)
    strip(model, plan, inputs)  # grouped-query: heads 0, 1 are kv group 0, removed as one group with 2, 3
    assert torch.equal(model.layers[0].attn.sinks.detach(), before[:2]) and model.layers[0].attn.num_kv_heads == 1


def test_gpt_oss_sinks_are_found_not_no_attention_op():
    """GPT-OSS concatenates one sink logit per head to the scores: its attention is matched, the sinks coupled
    (its experts are another matcher's job: analysed without strict)."""
    from transformers import GptOssConfig
    cfg = GptOssConfig(vocab_size=100, hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
                       max_position_embeddings=64, use_cache=False)
    model, inputs = M._hf("GptOssModel", cfg), M._ids(50)
    plan = analyze(model, inputs)
    assert [(f.num_heads, f.num_kv_heads, [c.weight_name for c in f.coupled]) for f in plan.attention()] == \
        [(4, 2, [f"layers.{i}.self_attn.sinks"]) for i in range(2)]
    assert not any(u.kind == "attention" for u in plan.unmatched)


def test_einsum_relative_table_is_coupled_on_its_head_axis():
    model, inputs = M.einsum_relative()
    plan = analyze(model, inputs)
    (rel,) = plan.attention()[0].coupled
    assert (rel.weight_name, rel.axis, rel.size) == ("layers.0.attn.rel", 1, 3)
    zero_granules(model, plan, {k: [2] if f.kind == "attention" else [0, 5] for k, f in plan.families.items()})
    ref = outputs(model, inputs)
    strip(model, plan, inputs)
    assert model.layers[0].attn.rel.shape == (17, 1, 8) and model.layers[0].attn.heads == 1
    assert (outputs(model, inputs)[0] - ref[0]).abs().max() <= 1e-5


# -- class 6: vision hybrids --------------------------------------------------------------------------------
def test_levit_batch_norms_are_coupled_and_qkv_split_after_the_heads():
    model, inputs = M.levit()
    plan = analyze(model, inputs)
    att = plan.attention()[0]  # qkv: one Linear -> BatchNorm1d, viewed (heads, k + k + 2k), then split
    d = att.unit("q")
    per = 2 * d + att.unit("v")
    assert att.q.positions() == [h * per + i for h in range(att.num_heads) for i in range(d)]
    assert att.v.positions() == [h * per + 2 * d + i for h in range(att.num_heads) for i in range(att.unit("v"))]
    bn = {c.param: c for c in att.coupled if "queries_keys_values.batch_norm" in c.fqn}
    assert set(bn) == {"weight", "bias", "running_mean", "running_var"}
    assert sorted(bn["weight"].positions()) == list(range(att.num_heads * per))  # q, k and v channels, per head
    ffn = plan.feed_forward()[0]
    assert ffn.activation == "open:batch_norm,hardswish" and {c.param for c in ffn.coupled} == \
        {"weight", "bias", "running_mean", "running_var"}
    zero_granules(model, plan, {k: [0] for k in plan.families})
    ref = outputs(model, inputs)
    strip(model, plan, inputs)
    layer = model.levit.encoder.stages[0].layers[0].module
    assert layer.queries_keys_values.batch_norm.running_mean.shape == (per,) and layer.attention_biases.shape[0] == 1
    assert layer.num_attention_heads == 1 and layer.out_dim_projection == att.unit("v")
    assert (outputs(model, inputs)[0] - ref[0]).abs().max() <= 1e-5 * max(1.0, float(ref[0].abs().max()))


def test_open_activation_neurons_go_by_their_down_columns_only():
    """Hardswish is named; an elementwise composition is open: zero up rows with live down columns stay."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Hardswish(), torch.nn.Linear(16, 8)).eval()
    (f,) = analyze(net, torch.randn(3, 8)).feed_forward()
    assert f.activation == "hardswish"

    class Clamped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)

        def forward(self, x):
            return self.down(torch.clamp(torch.sigmoid(self.up(x)) * 3 - 1, min=0.5))
    model, x = Clamped().eval(), torch.randn(3, 8)
    plan = analyze(model, (x,))
    (f,) = plan.feed_forward()
    assert f.activation == "open:sigmoid,mul,sub,clamp"
    with torch.no_grad():
        model.up.weight[:4] = 0  # up rows zero, down live: a constant the open function gives, kept
        model.down.weight[:, 12:] = 0  # down columns zero: removed
    ref = outputs(model, (x,))
    report = strip(model, plan, (x,))
    assert report.families[f.fqn]["kept"] == list(range(12)) and (outputs(model, (x,))[0] - ref[0]).abs().max() < 1e-6
