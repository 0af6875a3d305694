"""passes.trace: export wrapper, input forms, projections and channel-index replay."""
import pytest
import torch
import torch.nn as nn

from passes.analyze.ops import op_name, shape_of
from passes.analyze.trace import Graph, TraceError, index_through, split_inputs, trace
from tests import models


def test_split_inputs_forms():
    t = torch.zeros(2)
    assert split_inputs({"x": t})[1]["x"] is t and split_inputs({"x": t})[0] == ()
    assert split_inputs((t, t))[0] == (t, t)
    assert split_inputs([t])[0] == (t,)
    assert split_inputs(t)[0][0] is t and split_inputs(t)[1] == {}
    with pytest.raises(TypeError, match="dict of forward kwargs"):
        split_inputs("input_ids")


def test_trace_restores_training_mode_and_returns_program():
    model, inputs = models.hand_block()
    model.train()
    ep = trace(model, inputs)
    assert model.training, "trace must restore the caller's train/eval mode"
    assert isinstance(ep, torch.export.ExportedProgram)
    out = ep.module()(**inputs)
    with torch.no_grad():
        torch.testing.assert_close(out, model.eval()(**inputs))


def test_trace_error_names_the_fix():
    with pytest.raises(TraceError, match=r"\['not_an_arg'\] are not parameters of Linear.forward.*\['input'\]"):
        trace(nn.Linear(4, 4), {"not_an_arg": torch.zeros(1, 4)})
    with pytest.raises(TraceError, match="torch.export failed.*example inputs"):
        trace(nn.Linear(4, 4), (torch.zeros(1, 4), torch.zeros(1, 4)))  # one arg too many


def test_projections_of_bert_map_to_parameters():
    model, inputs = models.bert()
    g = Graph(trace(model, inputs))
    projs = {p.weight: p for p in g.projections()}
    # 6 linears per layer (q k v out up down) + pooler + classifier
    assert len(projs) == 6 * 2 + 2
    q = projs["bert.encoder.layer.0.attention.self.query.weight"]
    assert (q.module, q.param, q.out_axis, q.bias_param) == \
        ("bert.encoder.layer.0.attention.self.query", "weight", 0, "bias")
    assert (q.in_features, q.out_features) == (32, 32)
    up = projs["bert.encoder.layer.1.intermediate.dense.weight"]
    assert (up.in_features, up.out_features) == (32, 64)
    assert g.module_of(q.node) == "bert.encoder.layer.0.attention.self.query"
    assert g.param_of(q.node.args[1]) == q.weight


def test_conv1d_projection_reads_output_axis_one():
    model, inputs = models.gpt2()
    g = Graph(trace(model, inputs))
    c_attn = next(p for p in g.projections() if p.weight == "transformer.h.0.attn.c_attn.weight")
    assert op_name(c_attn.node) == "addmm"
    assert (c_attn.out_axis, c_attn.in_features, c_attn.out_features, c_attn.bias_param) == (1, 32, 96, "bias")
    assert tuple(model.get_submodule(c_attn.module).weight.shape) == (32, 96)


def test_index_replay_follows_split_and_head_view():
    """Channel indices of GPT-2's fused c_attn, replayed to the key heads, land at E + h*D + d."""
    model, inputs = models.gpt2()
    g = Graph(trace(model, inputs))
    sdpa = next(n for n in g.nodes if op_name(n) == "scaled_dot_product_attention")
    path = g.path_to_projection(sdpa.args[1])
    assert path is not None and g.projection(path[0]).weight.endswith("h.0.attn.c_attn.weight")
    shp = shape_of(path[0])
    idx = index_through(path, torch.arange(shp[-1]).expand(shp).contiguous())
    assert tuple(idx.shape) == shape_of(sdpa.args[1]) == (2, 4, 8, 8)
    want = 32 + torch.arange(4).view(4, 1) * 8 + torch.arange(8)
    assert torch.equal(idx[1, :, 5, :], want)


def test_index_replay_refuses_non_layout_ops():
    model, inputs = models.hand_block()
    g = Graph(trace(model, inputs))
    ln = next(n for n in g.nodes if op_name(n) == "layer_norm")
    assert g.path_to_projection(ln) is None  # layer_norm is neither layout nor pointwise
    lin = next(n for n in g.nodes if op_name(n) == "linear")
    assert index_through([ln.args[0], ln], torch.zeros(shape_of(ln), dtype=torch.long)) is None
    assert g.projection(ln) is None and g.projection(lin) is not None
