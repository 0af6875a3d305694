"""The failure classes of issue 11, one test each: what analyze records, what prepare and strip do with it."""
import copy
import dataclasses

import pytest
import torch
import torch.nn as nn

from leap_fx.masks import FixedMask
from leap_fx.masks.lifecycle import carriers, fold, owners, zero_granules
from leap_fx.methods.registry import prepare_masks as prepare
from leap_fx.spec.mask import MaskSpec
from passes.analyze import AnalyzeError, analyze
from passes.strip import StripError, strip
from passes.strip.verify import outputs
from tests import models
from tests.passes.builders import randomize_biases

FIXED = dict(owner=lambda shape, key, dev: FixedMask(shape, key, dev))


def _close(model, inputs, ref, tol=1e-5):
    got = outputs(model, inputs)
    return len(got) == len(ref) and all((a - b).abs().max() <= tol * max(1.0, float(b.abs().max()))
                                        for a, b in zip(got, ref))


# -- class 1: per-head tensors outside q/k/v/out, shared by every layer (T5) ------------------------
def test_shared_relative_bias_ties_layers_and_is_sliced():
    model, inputs = models.ALL["t5"]()
    plan = analyze(model, inputs)
    enc = [f for f in plan.attention() if f.fqn.startswith("encoder") and f.coupled]
    assert len(enc) == 2 and len({f.tie for f in enc}) == 1 and enc[0].tie.endswith("relative_attention_bias.weight")
    table = enc[0].coupled[0]
    assert (table.axis, table.size) == (1, 4)  # one column per head
    prepare(model, MaskSpec(0.5, "structured"), plan, **FIXED)
    tied_owner = {id(o) for name, _, _, c in carriers(model) for o in c.owners
                  if name.startswith("encoder.block") and "SelfAttention" in name}
    assert len(tied_owner) == 1  # the same heads go in every encoder layer
    owners(model)[enc[0].fqn].set(torch.tensor([1.0, 0.0, 1.0, 0.0]))  # a tie's owner: its first family
    fold(model)
    ref = outputs(model, inputs)
    report = strip(model, plan, inputs)
    bias = model.get_submodule(table.fqn).weight
    assert bias.shape[1] == 2 and model.get_submodule(table.fqn).embedding_dim == 2
    assert all(report.families[f.fqn]["kept"] == [0, 2] for f in enc)
    assert _close(model, inputs, ref)


def test_tied_heads_remove_only_what_every_layer_can_lose():
    model, inputs = models.ALL["t5"]()
    plan = analyze(model, inputs)
    enc = [k for k, f in plan.families.items() if f.kind == "attention" and f.tie and k.startswith("encoder")]
    with torch.no_grad():  # layer 0 loses heads 1 and 3 (out columns), layer 1 only head 3
        for key, heads in zip(enc, ([1, 3], [3])):
            fam = plan.families[key]
            w = model.get_submodule(fam.out.fqn).weight
            for h in heads:
                w[:, h * 8:(h + 1) * 8] = 0
    ref = outputs(model, inputs)
    report = strip(model, plan, inputs)
    assert [report.families[k]["kept"] for k in enc] == [[0, 1, 2], [0, 1, 2]]
    assert _close(model, inputs, ref)


def _cross(plan):
    return [k for k, f in plan.families.items() if f.kind == "attention" and "EncDecAttention" in k]


def test_computed_per_head_tensor_ties_the_layers_reading_it():
    model, inputs = models.ALL["t5"]()
    plan = analyze(model, inputs)
    cross = [plan.families[k] for k in _cross(plan)]
    # the first cross-attention makes zeros(1, n_heads, q, k); the decoder adds it in every later one
    assert len(cross) == 2 and {f.tie for f in cross} == {"decoder.block.0.layer.1.EncDecAttention:zeros"}
    assert all(cross[0].tie in f.reads and not f.coupled and not f.frozen for f in cross)
    assert len({f.tie for f in plan.attention() if f.tie}) == 3  # + encoder and decoder bias tables
    again = type(plan).from_json(plan.to_json())
    assert again.to_dict() == plan.to_dict() and [again.families[k].reads for k in _cross(plan)] == \
        [f.reads for f in cross]
    for f in plan.attention():  # the tie's tensor is printed once, not again as "+ <coupled>"
        assert f.describe().count(f.tie) == 1, f.describe()


@pytest.mark.slow
def test_cross_attention_layers_masked_apart_strip_and_export(tmp_path):
    from passes.export import export_onnx
    model, inputs = models.ALL["t5"]()
    plan = analyze(model, inputs)
    cross = _cross(plan)
    untied = type(plan).from_dict(plan.to_dict())  # masks of a method that ignored the tie
    for k in cross:
        untied.families[k] = dataclasses.replace(untied.families[k], tie="")
    randomize_biases(model)
    zero_granules(model, untied, {cross[0]: [0, 2], cross[1]: [2]})  # layer 0 keeps 2 heads, layer 1 keeps 1
    ref = outputs(model, inputs)
    with pytest.raises(StripError, match="EncDecAttention"):
        strip(copy.deepcopy(model), untied, inputs)  # different head counts break the shared zeros
    report = strip(model, plan, inputs)  # self-checked: raises StripError on a mismatch
    assert [report.families[k]["kept"] for k in cross] == [[0, 2], [0, 2]]  # what both can lose: 1, 3
    assert all(model.get_submodule(k).n_heads == 2 for k in cross)
    assert _close(model, inputs, ref)
    export = export_onnx(model, inputs, str(tmp_path / "t5.onnx"))
    assert max(export.max_abs_diff.values()) <= 1e-4


class _BiasedAttention(nn.Module):
    """Attention adding a per-head bias; with ``bias=None`` it makes zeros(1, n_heads, t, t) itself."""

    def __init__(self, width=16, heads=4):
        super().__init__()
        self.n_heads, self.head_dim = heads, width // heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x, bias=None):
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        bias = torch.zeros(1, self.n_heads, t, t) if bias is None else bias
        att = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim ** 0.5 + bias, dim=-1)
        return x + self.o((att @ v).transpose(1, 2).reshape(b, t, -1)), bias


class _SharedBias(nn.Module):
    """Two layers reading one zeros bias: made by layer 0 (``outside=False``) or by the model itself
    from a fixed head count (``outside=True``: strip cannot resize it)."""

    def __init__(self, outside):
        super().__init__()
        self.outside, self.layers = outside, nn.ModuleList(_BiasedAttention() for _ in range(2))

    def forward(self, x):
        bias = torch.zeros(1, 4, x.shape[1], x.shape[1]) if self.outside else None
        for layer in self.layers:
            x, bias = layer(x, bias)
        return x


@pytest.mark.parametrize("outside", [False, True])
def test_computed_bias_is_tied_when_resizable_else_frozen(outside):
    torch.manual_seed(0)
    model, inputs = _SharedBias(outside).eval(), {"x": torch.randn(2, 5, 16)}
    plan = analyze(model, inputs)
    fams = plan.attention()
    assert len(fams) == 2 and len({f.tie for f in fams}) == 1 and fams[0].tie.endswith(":zeros")
    assert all(bool(f.frozen) == outside for f in fams), [f.frozen for f in fams]
    if outside:
        assert "outside the attention modules" in fams[0].frozen and "cannot resize" in fams[0].frozen
    keys = [k for k, f in plan.families.items() if f.kind == "attention"]
    with torch.no_grad():  # layer 0 loses heads 1 and 3, layer 1 only head 3
        for key, heads in zip(keys, ([1, 3], [3])):
            w = model.get_submodule(plan.families[key].out.fqn).weight
            for h in heads:
                w[:, h * 4:(h + 1) * 4] = 0
    ref = outputs(model, inputs)
    report = strip(model, plan, inputs)
    kept = [[0, 1, 2, 3]] * 2 if outside else [[0, 1, 2]] * 2
    assert [report.families[k]["kept"] for k in keys] == kept
    assert _close(model, inputs, ref)


def test_alibi_heads_are_frozen_and_get_no_masks():
    model, inputs = models.ALL["mpt"]()
    plan = analyze(model, inputs)
    assert all("ALiBi" in f.frozen for f in plan.attention())
    prepare(model, MaskSpec(0.5, "structured"), plan, **FIXED)
    masked = {name for name, *_ in carriers(model)}
    assert not any(f.q.weight_name in masked or f.out.weight_name in masked for f in plan.attention())
    assert all(f.up.weight_name in masked for f in plan.feed_forward())


# -- class 2: one module run in several layers (ALBERT) ----------------------------------------------
def test_shared_layer_is_one_family_with_one_owner():
    model, inputs = models.ALL["albert"]()  # 3 layers, one shared layer module
    plan = analyze(model, inputs)
    assert len(plan.attention()) == len(plan.feed_forward()) == 1
    prepare(model, MaskSpec(0.5, "structured"), plan, **FIXED)
    assert len(owners(model)) == 2 and {o.granules for o in owners(model).values()} == {4, 48}


# -- class 3: scores reshaped between QK^T and softmax (DeBERTa-v2) ----------------------------------
def test_disentangled_attention_is_found_with_its_position_projections():
    model, inputs = models.ALL["deberta_v2"]()
    plan = analyze(model, inputs)
    assert len(plan.attention()) == 2 and not plan.unmatched
    names = {c.weight_name.rsplit(".", 2)[-2] for c in plan.attention()[0].coupled}
    assert names == {"pos_key_proj", "pos_query_proj"}  # per-head projections of the relative positions


def test_torch_pruning_group_that_differs_from_the_plan_is_refused():
    model, inputs = models.ALL["deberta_v2"]()
    plan = analyze(model, inputs)
    for key, fam in plan.families.items():  # a Plan that knows neither the coupled projections nor the
        if fam.kind == "attention":          # shared position embeddings (that would keep torch-pruning out)
            plan.families[key] = dataclasses.replace(fam, coupled=(), shared=())
    randomize_biases(model)
    zero_granules(model, plan, {k: [0, 1] for k, f in plan.families.items() if f.kind == "attention"})
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(StripError, match="torch-pruning's dependency group .* differs from the Plan.*pos_"):
        strip(model, plan, inputs, backend="auto")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# -- class 4: partial rotary and heads interleaved in a fused qkv (GPT-NeoX) -------------------------
def test_interleaved_heads_are_index_slices_and_masks_follow_them():
    model, inputs = models.ALL["gpt_neox"]()
    plan = analyze(model, inputs)
    fam = plan.attention()[0]
    d = fam.head_dim
    assert fam.q.positions()[:2 * d] == list(range(0, d)) + list(range(3 * d, 4 * d))  # [heads, 3, head_dim]
    assert fam.k.positions()[:d] == list(range(d, 2 * d)) and fam.v.positions()[:d] == list(range(2 * d, 3 * d))
    zero_granules(model, plan, {fam.fqn: [1, 3]})
    w = model.get_submodule(fam.q.fqn).weight
    dead = [r for h in (0, 2) for r in range(3 * d * h, 3 * d * (h + 1))]
    assert w[dead].abs().sum() == 0  # heads 0 and 2: their q, k and v rows, interleaved
    assert (w[3 * d:6 * d].abs().sum(1) > 0).all() and (w[9 * d:].abs().sum(1) > 0).all()  # heads 1, 3 kept


# -- class 5: inputs whose axis 1 is not a sequence (audio features) -------------------------------
def test_audio_features_keep_mel_and_frames_fixed(tmp_path):
    from passes.export import export_onnx
    model, inputs = models.ALL["whisper_encoder"]()
    rep = export_onnx(model, inputs, str(tmp_path / "w.onnx"))
    assert rep.dynamic_axes == {"input_features": {0: "batch"}} and set(rep.max_abs_diff) == {"1x-", "3x-", "2x-"}


# -- class 6: mask helpers the TorchScript exporter lacks (GPT-2, default 1024 positions, ids only) --
def test_attention_mask_is_supplied_when_torchscript_fails(tmp_path):
    from passes.export import export_onnx
    model, inputs = models.ALL["gpt2_default"]()
    rep = export_onnx(model, inputs, str(tmp_path / "g.onnx"))
    assert rep.path_taken == "torchscript+attention_mask" and rep.input_names == ["input_ids", "attention_mask"]
    assert "aten::diff" in rep.attempts[0] and max(rep.max_abs_diff.values()) <= 1e-4


# -- class 7: partial finds are reported; strict raises ---------------------------------------------
class _MixingMLP(nn.Module):
    """Up -> softmax over the features -> down: the softmax mixes neurons, so no neuron can go alone."""

    def __init__(self):
        super().__init__()
        self.attn = models.HandAttention(16, 2)
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.down(torch.softmax(self.up(x), dim=-1))


def test_unmatched_sites_are_listed_and_strict_raises():
    torch.manual_seed(0)
    model, x = _MixingMLP().eval(), torch.randn(2, 5, 16)
    plan = analyze(model, (x,))
    assert len(plan.attention()) == 1 and not plan.feed_forward()
    (u,) = plan.unmatched
    assert (u.kind, u.module) == ("ffn", "down") and "softmax between the projections" in u.reason
    assert "WARNING" in plan.table()
    with pytest.raises(AnalyzeError, match="strict=True.*ffn site .* in down"):
        analyze(model, (x,), strict=True)


# -- strip verifies itself and names the culprit ------------------------------------------------------
class _HiddenHeadCount(nn.Module):
    """Head count in an attribute strip does not know (``nh``); view(b, s, nh, -1) keeps running."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.nh = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (m(x).view(b, s, self.nh, -1).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return x + self.o(a.transpose(1, 2).reshape(b, s, -1))


def test_strip_self_check_names_family_and_tensor_and_restores():
    torch.manual_seed(0)
    model, x = _HiddenHeadCount().eval(), torch.randn(2, 6, 32)
    plan = analyze(model, (x,))
    with torch.no_grad():
        model.o.weight[:, 8:16] = 0  # head 1 dead
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(StripError, match=r"changes the outputs by .*Culprit: family '' \(attention.*q=q.weight.*"
                                         r"Try: leave this family out"):
        strip(model, plan, (x,))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and model.nh == 4


def test_strip_accepts_weight_norm_outside_the_plan():
    model, inputs = models.ALL["wav2vec2"]()  # the positional conv carries a weight_norm parametrization
    plan = analyze(model, inputs)
    assert any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    zero_granules(model, plan, {k: [0] for k in plan.families})
    ref = outputs(model, inputs)
    strip(model, plan, inputs)
    assert _close(model, inputs, ref)


# -- tensors on the q / k / v paths ----------------------------------------------------------------
def _tiny(cls_name, **kw):
    import transformers
    torch.manual_seed(0)
    cfg = getattr(transformers, cls_name.replace("Model", "Config"))(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, **kw)
    return getattr(transformers, cls_name)(cfg).eval(), models._ids(30)


def test_rotary_table_is_shared_and_keeps_torch_pruning_out():
    """torch-pruning would group every layer's heads through the shared table (a false coupling): the
    Plan knows the table reaches every head alike, and strip slices the Plan's tensors itself."""
    model, inputs = _tiny("RoFormerModel", max_position_embeddings=64)
    plan = analyze(model, inputs)
    assert all("encoder.embed_positions.weight" in f.shared for f in plan.attention())
    zero_granules(model, plan, {k: [0, 2] for k, f in plan.families.items() if f.kind == "attention"})
    ref = outputs(model, inputs)
    report = strip(model, plan, inputs, backend="auto")
    assert all(f["removed_by"].startswith("slice (position tables shared by all heads")
               for f in report.families.values() if f["kind"] == "attention")
    assert _close(model, inputs, ref)


def test_per_head_q_and_v_biases_are_coupled():
    model, inputs = _tiny("DebertaModel", max_position_embeddings=64, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
    plan = analyze(model, inputs)
    fam = plan.attention()[0]
    assert {c.weight_name.rsplit(".", 1)[-1] for c in fam.coupled} == {"q_bias", "v_bias"}
    assert fam.q.index is not None  # DeBERTa's in_proj interleaves q, k, v per head
    zero_granules(model, plan, {k: [1] for k, f in plan.families.items() if f.kind == "attention"})
    ref = outputs(model, inputs)
    strip(model, plan, inputs)
    assert model.get_submodule(fam.fqn + ".self").q_bias.shape == (8,) and _close(model, inputs, ref)


@pytest.mark.parametrize("cls_name, why", [("Olmo2Model", "statistic over several heads"),
                                           ("WavLMModel", "residual stream")])
def test_heads_tied_to_other_channels_are_frozen(cls_name, why):
    if cls_name == "WavLMModel":
        model, inputs = _tiny(cls_name, conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_buckets=16)
        inputs = {"input_values": torch.randn(2, 400, generator=torch.Generator().manual_seed(1))}
    else:
        model, inputs = _tiny(cls_name)
    plan = analyze(model, inputs)
    assert any(why in f.frozen for f in plan.attention()), [f.frozen for f in plan.attention()]


def test_torch_pruning_that_never_finishes_is_given_up(monkeypatch):
    """get_pruning_group can spin (grouped-query attention, partial rotary): strip stops waiting, once."""
    import time

    import torch_pruning as tp

    from passes.strip import tp_backend
    monkeypatch.setattr(tp_backend, "GROUP_SECONDS", 0.3)
    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", lambda *a, **k: time.sleep(30))
    model, inputs = models.bert()
    plan = analyze(model, inputs)
    zero_granules(model, plan, {k: [0] for k in plan.families})
    ref = outputs(model, inputs)
    t0 = time.perf_counter()
    report = strip(model, plan, inputs, backend="auto")
    how = [f["removed_by"] for f in report.families.values()]
    assert "did not finish within 0.3 s" in how[0] and all("timed out" in h for h in how[1:])
    assert time.perf_counter() - t0 < 20 and _close(model, inputs, ref)
