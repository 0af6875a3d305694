import io
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from leap_fx.masks import GranuleMask as LeapMask
from leap_fx.masks import (
    ScheduledTopK,
    carriers,
    densities,
    fold,
    freeze,
    owners,
    param_groups,
)
from leap_fx.masks.prune_api import LeapPruning
from leap_fx.methods.leap.config import LeapConfig
from leap_fx.methods.registry import prepare_masks as prepare
from passes.analyze.plan import Plan
from tests.conftest import bert_inputs, tiny_bert
from tests.plans import _attn, _ffn, bert_plan

K0 = 1 / (1 + math.exp(-5.0))


# -- hand-built Plans (the Slice geometry of passes/plan.py) ----------------------------------------


def tiny_gpt2():
    from transformers import GPT2Config, GPT2Model
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=32, vocab_size=100, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    return GPT2Model(cfg).eval()


def gpt2_plan(layers=2, E=32, H=4, F=128):
    fams = {}
    for i in range(layers):
        a, m = f"h.{i}.attn", f"h.{i}.mlp"
        fams[a] = _attn(a, i, H, H, E // H, (f"{a}.c_attn", "weight", 1, 0, E), (f"{a}.c_attn", "weight", 1, E, E),
                        (f"{a}.c_attn", "weight", 1, 2 * E, E), (f"{a}.c_proj", "weight", 0, 0, E))
        fams[m] = _ffn(m, i, F, (f"{m}.c_fc", "weight", 1, 0, F), (f"{m}.c_proj", "weight", 0, 0, F))
    return Plan(fams, "GPT2Model")


def tiny_llama():
    from transformers import LlamaConfig, LlamaModel
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64, use_cache=False)
    return LlamaModel(cfg).eval()


def llama_plan(E=32, H=4, KV=2, F=48):
    a, m, d = "layers.0.self_attn", "layers.0.mlp", E // H
    return Plan({a: _attn(a, 0, H, KV, d, (f"{a}.q_proj", "weight", 0, 0, E), (f"{a}.k_proj", "weight", 0, 0, KV * d),
                          (f"{a}.v_proj", "weight", 0, 0, KV * d), (f"{a}.o_proj", "weight", 1, 0, E)),
                 m: _ffn(m, 0, F, (f"{m}.up_proj", "weight", 0, 0, F), (f"{m}.down_proj", "weight", 1, 0, F),
                         gate=(f"{m}.gate_proj", "weight", 0, 0, F))}, "LlamaModel")


def torch_layer():
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()


def torch_layer_plan(E=32, H=4, F=64):
    return Plan({"self_attn": _attn("self_attn", 0, H, H, E // H, ("self_attn", "in_proj_weight", 0, 0, E),
                                    ("self_attn", "in_proj_weight", 0, E, E), ("self_attn", "in_proj_weight", 0, 2 * E, E),
                                    ("self_attn.out_proj", "weight", 1, 0, E)),
                 "": _ffn("", 0, F, ("linear1", "weight", 0, 0, F), ("linear2", "weight", 1, 0, F))}, "EncoderLayer")


def gpt2_inputs():
    return {"input_ids": bert_inputs()["input_ids"]}


def _set_owner(o, keep):
    """Make owner o keep exactly the granules where ``keep`` is 1 (scores + sigma)."""
    keep = torch.as_tensor(keep, dtype=torch.float32)
    with torch.no_grad():
        o.scores.copy_(keep.view_as(o.scores) + 0.01 * torch.arange(keep.numel()).view_as(o.scores))
        k = (keep.sum().item() - 0.5) / keep.numel()
        o.sigma.fill_(o.temperature * math.log(k / (1 - k)))


def _randomize(model, seed=0, k=0.6):
    g = torch.Generator().manual_seed(seed)
    for o in owners(model).values():
        with torch.no_grad():
            o.scores.copy_(torch.randn(o.scores.shape, generator=g))
            if hasattr(o, "sigma"):
                o.sigma.fill_(o.temperature * math.log(k / (1 - k)))


# -- presets at init --------------------------------------------------------------------------------
CASES = [("unstructured", {}), ("block", {"block_size": 16}), ("block", {"block_size": 8}),
         ("hybrid", {}), ("hybrid", {"block_size": 16}), ("structured", {})]


@pytest.mark.parametrize("preset, kw", CASES)
@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_init_k_and_density_for_every_preset(preset, kw, arch):
    model, plan = (tiny_bert(), bert_plan()) if arch == "bert" else (tiny_gpt2(), gpt2_plan())
    prepare(model, LeapConfig(0.3, preset, **kw), plan)
    own = owners(model)
    assert own
    for o in own.values():
        assert abs(o.k().item() - K0) < 1e-6
    by_name = {n: lm for n, _, _, lm in carriers(model)}
    dens = densities(model)
    assert set(dens) == set(by_name) and len(dens) == (12 if arch == "bert" else 8)
    for name, d in dens.items():
        n = by_name[name].owners[0].granules
        assert 0 <= d - K0 < 1 / n + 1e-7, (name, d, n)


def test_prepare_skips_excluded_heads_and_counts_elements():
    model = tiny_bert()
    prepare(model, LeapConfig(0.5, "unstructured"))
    assert not parametrize.is_parametrized(model.classifier) and not parametrize.is_parametrized(model.bert.pooler.dense)
    own = owners(model)
    assert len(own) == 12 and sum(o.count for o in own.values()) == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    with pytest.raises(ValueError, match="already prepared"):
        prepare(model, LeapConfig(0.5))
    m2 = prepare(tiny_bert(), LeapConfig(0.5, include=("*attention*",)))
    assert set(owners(m2)) == {f"bert.encoder.layer.{i}.attention.{n}.weight" for i in range(2)
                               for n in ("self.query", "self.key", "self.value", "output.dense")}


def test_row_granule_is_per_output_neuron_for_linear_and_conv1d():
    b = prepare(tiny_bert(), LeapConfig(0.5, attention="row", ffn="row"))
    assert owners(b)["bert.encoder.layer.0.intermediate.dense.weight"].scores.shape == (64, 1)
    g = prepare(tiny_gpt2(), LeapConfig(0.5, attention="row", ffn="row"))
    o = owners(g)["h.0.mlp.c_fc.weight"]  # Conv1D [in=32, out=128]: one score per output column
    assert o.scores.shape == (1, 128)
    _randomize(g)
    m = g.h[0].mlp.c_fc.parametrizations.weight[0].mask((32, 128), hard=True)
    assert torch.equal(m, m[:1].expand(32, 128)) and 0 < m.mean() < 1


def test_rectangular_block_follows_linear_convention_on_conv1d():
    g = prepare(tiny_gpt2(), LeapConfig(0.5, attention="8x16", ffn="8x16", other="8x16"))
    o = owners(g)["h.0.mlp.c_fc.weight"]  # 128 out x 32 in  -> grid (16, 2), stored transposed (2, 16)
    assert o.scores.shape == (2, 16)
    _randomize(g)
    m = g.h[0].mlp.c_fc.parametrizations.weight[0].mask((32, 128), hard=True)
    blocks = m.view(2, 16, 16, 8)
    assert torch.equal(blocks.amax((1, 3)), blocks.amin((1, 3)))  # constant in each 16(in) x 8(out) block


def test_needs_plan_and_non_dividing_block_errors():
    for preset in ("hybrid", "structured"):
        with pytest.raises(ValueError, match=r"needs a Plan: plan = leap_fx.analyze\(model, example_inputs\)"):
            prepare(tiny_bert(), LeapConfig(0.3, preset))
    with pytest.raises(ValueError) as e:
        prepare(tiny_bert(), LeapConfig(0.3, "block", block_size=24))
    msg = str(e.value)
    assert "bert.encoder.layer.0.attention.self.query.weight" in msg and "(32, 32)" in msg and "24x24" in msg
    assert "choose a block_size" in msg and "exclude" in msg


# -- tied masks -------------------------------------------------------------------------------------
def test_head_and_neuron_tied_masks_bert():
    model = prepare(tiny_bert(), LeapConfig(0.5, "structured"), bert_plan())
    own = owners(model)
    assert set(own) == {"bert.encoder.layer.0.attention", "bert.encoder.layer.0", "bert.encoder.layer.1.attention",
                        "bert.encoder.layer.1"}
    assert own["bert.encoder.layer.0.attention"].count == 4 * 32 * 32
    _set_owner(own["bert.encoder.layer.0.attention"], [1, 0, 1, 0])
    keep_n = (torch.arange(64) % 3 == 0).float()
    _set_owner(own["bert.encoder.layer.0"], keep_n)
    L = model.bert.encoder.layer[0]
    head_rows = torch.tensor([1, 0, 1, 0]).repeat_interleave(8).bool()
    with torch.no_grad():
        for lin in (L.attention.self.query, L.attention.self.key, L.attention.self.value):
            w = lin.weight
            assert (w[~head_rows] == 0).all() and (w[head_rows] != 0).all()
        wo = L.attention.output.dense.weight
        assert (wo[:, ~head_rows] == 0).all() and (wo[:, head_rows] != 0).all()
        up, down = L.intermediate.dense.weight, L.output.dense.weight
        assert (up[~keep_n.bool()] == 0).all() and (up[keep_n.bool()] != 0).all()
        assert (down[:, ~keep_n.bool()] == 0).all() and (down[:, keep_n.bool()] != 0).all()
    assert densities(model)["bert.encoder.layer.0.attention.self.query.weight"] == 0.5


def test_head_tied_fused_gpt2_c_attn():
    model = prepare(tiny_gpt2(), LeapConfig(0.5, "structured"), gpt2_plan())
    attn = model.h[0].attn
    plist = attn.c_attn.parametrizations.weight
    assert len(plist) == 1 and len(plist[0].segments) == 3  # one parametrization, q/k/v segments
    _set_owner(owners(model)["h.0.attn"], [0, 1, 1, 0])
    keep = torch.tensor([0, 1, 1, 0]).repeat_interleave(8).bool()
    with torch.no_grad():
        w = attn.c_attn.weight  # Conv1D [in=32, out=96]: q | k | v columns
        for part in range(3):
            cols = w[:, part * 32:(part + 1) * 32]
            assert (cols[:, ~keep] == 0).all() and (cols[:, keep] != 0).all()
        assert (attn.c_proj.weight[~keep] == 0).all() and (attn.c_proj.weight[keep] != 0).all()
    out = model(**gpt2_inputs()).last_hidden_state
    assert torch.isfinite(out).all()


def test_head_tied_gqa_kv_mask_is_max_over_q_heads():
    model = prepare(tiny_llama(), LeapConfig(0.5, "structured"), llama_plan())
    own = owners(model)
    attn, mlp = model.layers[0].self_attn, model.layers[0].mlp
    _set_owner(own["layers.0.self_attn"], [1, 1, 0, 1])  # q heads 0,1 -> kv 0 ; q heads 2,3 -> kv 1 (one alive)
    with torch.no_grad():
        q_keep = torch.tensor([1, 1, 0, 1]).repeat_interleave(8).bool()
        assert (attn.q_proj.weight[~q_keep] == 0).all() and (attn.q_proj.weight[q_keep] != 0).all()
        assert (attn.k_proj.weight != 0).all() and (attn.v_proj.weight != 0).all()
        assert (attn.o_proj.weight[:, ~q_keep] == 0).all()
    _set_owner(own["layers.0.self_attn"], [1, 1, 0, 0])  # both q heads of kv head 1 gone -> kv head 1 gone
    with torch.no_grad():
        for w in (attn.k_proj.weight, attn.v_proj.weight):
            assert (w[8:] == 0).all() and (w[:8] != 0).all()
    keep_n = (torch.arange(48) < 20).float()
    _set_owner(own["layers.0.mlp"], keep_n)
    with torch.no_grad():
        for w in (mlp.up_proj.weight, mlp.gate_proj.weight):
            assert (w[20:] == 0).all() and (w[:20] != 0).all()
        assert (mlp.down_proj.weight[:, 20:] == 0).all()
    assert torch.isfinite(model(**bert_inputs()).last_hidden_state).all()


def test_head_tied_torch_mha_in_proj_weight():
    layer = torch_layer()
    x = torch.randn(2, 8, 32)
    prepare(layer, LeapConfig(0.5, "structured"), torch_layer_plan())
    mha = layer.self_attn
    assert parametrize.is_parametrized(mha, "in_proj_weight")
    _set_owner(owners(layer)["self_attn"], [1, 0, 0, 1])
    keep = torch.tensor([1, 0, 0, 1]).repeat_interleave(8).bool()
    with torch.no_grad():
        w = mha.in_proj_weight
        for part in range(3):
            rows = w[part * 32:(part + 1) * 32]
            assert (rows[~keep] == 0).all() and (rows[keep] != 0).all()
        assert (mha.out_proj.weight[:, ~keep] == 0).all()
        before = layer(x)
    fold(layer)
    assert not parametrize.is_parametrized(layer.self_attn)
    with torch.no_grad():
        assert torch.allclose(layer(x), before, atol=1e-6)


# -- fold / freeze / state ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch, preset", [("bert", "unstructured"), ("bert", "hybrid"), ("bert", "structured"),
                                          ("gpt2", "block"), ("gpt2", "structured")])
def test_fold_is_exact_and_restores_dense_keys(arch, preset):
    if arch == "bert":
        model, plan, inputs, dense_keys = tiny_bert(), bert_plan(), bert_inputs(), set(tiny_bert().state_dict())
        run = lambda m: m(**inputs).logits
    else:
        model, plan, inputs, dense_keys = tiny_gpt2(), gpt2_plan(), gpt2_inputs(), set(tiny_gpt2().state_dict())
        run = lambda m: m(**inputs).last_hidden_state
    prepare(model, LeapConfig(0.4, preset, block_size=16), plan)
    _randomize(model)
    assert min(densities(model).values()) < 1.0
    with torch.no_grad():
        before = run(model)
    fold(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert set(model.state_dict()) == dense_keys
    with torch.no_grad():
        assert (run(model) - before).abs().max() <= 1e-6


@pytest.mark.parametrize("preset", ["block", "structured"])
def test_freeze_then_fold(preset):
    model = prepare(tiny_bert(), LeapConfig(0.4, preset, block_size=16), bert_plan())
    _randomize(model)
    x = bert_inputs()
    with torch.no_grad():
        before = model(**x).logits
    q_owner = owners(model).get("bert.encoder.layer.0.attention.self.query.weight")
    freeze(model)
    q = model.bert.encoder.layer[0].attention.self.query
    assert not parametrize.is_parametrized(q) and hasattr(q, "weight_orig") and hasattr(q, "weight_mask")
    hooks = [h for h in q._forward_pre_hooks.values() if isinstance(h, LeapPruning)]
    assert len(hooks) == 1
    if q_owner is not None:  # per-matrix owner frozen faithfully: same S, same block
        assert torch.equal(hooks[0].scores, q_owner.scores.detach()) and hooks[0].block == (16, 16)
    assert not owners(model)
    with torch.no_grad():
        assert torch.equal(model(**x).logits, before)
    fold(model)
    assert set(model.state_dict()) == set(tiny_bert().state_dict())
    with torch.no_grad():
        assert (model(**x).logits - before).abs().max() <= 1e-6


def test_param_groups_dedup_tied_owners():
    model = prepare(tiny_bert(), LeapConfig(0.5, "structured"), bert_plan())
    sd_sigma_keys = [k for k in model.state_dict() if k.endswith(".sigma")]
    assert len(sd_sigma_keys) == 2 * (4 + 2)  # shared owners appear under every member's key
    groups = param_groups(model, lr=1e-4, mask_lr=0.05, weight_decay=0.01)
    w, m = groups[0]["params"], groups[1]["params"]
    assert groups[0]["lr"] == 1e-4 and groups[1]["lr"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert len(m) == 2 * 4 and len({id(p) for p in m}) == len(m)  # 4 owners x (S, sigma), once each
    ids_w = {id(p) for p in w}
    assert len(ids_w) == len(w) and not ids_w & {id(p) for p in m}
    assert len(w) + len(m) == len(list(model.parameters()))
    torch.optim.AdamW(groups)  # torch rejects duplicated parameters across groups


def _train(model, steps, seed=1):
    opt = torch.optim.Adam(param_groups(model, lr=1e-3, mask_lr=1e-2))
    from leap_fx.methods.leap.regularizer import LeapRegularizer
    reg = LeapRegularizer(model, 0.5)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 100, (2, 8), generator=g)
        y = torch.randint(0, 2, (2,), generator=g)
        loss = nn.functional.cross_entropy(model(input_ids=ids).logits, y) + reg()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("preset", ["unstructured", "structured"])
def test_state_dict_round_trip_then_identical_training(preset):
    cfg, plan = LeapConfig(0.5, preset), bert_plan()
    a = prepare(tiny_bert(seed=0), cfg, plan)
    _train(a, 3, seed=7)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = prepare(tiny_bert(seed=5), cfg, plan)
    b.load_state_dict(torch.load(buf))
    for (ka, oa), (kb, ob) in zip(owners(a).items(), owners(b).items()):
        assert ka == kb and torch.equal(oa.scores, ob.scores) and torch.equal(oa.sigma, ob.sigma)
    x = bert_inputs()
    with torch.no_grad():
        assert torch.equal(a(**x).logits, b(**x).logits)
    la, lb = _train(a, 3), _train(b, 3)
    assert la == lb
    with torch.no_grad():
        assert torch.equal(a(**x).logits, b(**x).logits)
    assert densities(a) == densities(b)


def test_leapmask_is_the_registered_parametrization():
    model = prepare(tiny_bert(), LeapConfig(0.5))
    q = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(q.parametrizations.weight[0], LeapMask)


def test_structured_prepare_with_analyzed_plan_matches_hand_plan():
    from passes.analyze import analyze
    model = tiny_bert()
    plan = analyze(model, bert_inputs())
    geo = lambda p: {f: [(s.fqn, s.param, s.axis, s.start, s.size, s.role) for s in fam.slices]
                     for f, fam in p.families.items()}
    assert geo(plan) == geo(bert_plan())
    prepare(model, LeapConfig(0.5, "structured"), plan)
    assert set(owners(model)) == set(bert_plan().families)
    _set_owner(owners(model)["bert.encoder.layer.1.attention"], [0, 0, 1, 1])
    with torch.no_grad():
        assert (model.bert.encoder.layer[1].attention.self.value.weight[:16] == 0).all()
        assert (model.bert.encoder.layer[1].attention.output.dense.weight[:, :16] == 0).all()
        assert torch.isfinite(model(**bert_inputs()).logits).all()


def test_plan_that_does_not_fit_the_model_is_a_value_error():
    with pytest.raises(ValueError, match=r"does not fit this model: build the plan from this model"):
        prepare(tiny_bert(), LeapConfig(0.5, "structured"), bert_plan(F=128))  # wrong ffn width
    with pytest.raises(ValueError, match="does not fit this model"):
        prepare(tiny_bert(), LeapConfig(0.5, "structured"), gpt2_plan())  # another model's plan


def test_freeze_scheduled_owner_and_deepcopy_keeps_ties():
    import copy

    from leap_fx.methods.movement.config import MovementConfig
    model = prepare(tiny_bert(), MovementConfig(0.5, "structured"), bert_plan())
    _randomize(model)
    clone = copy.deepcopy(model)
    co = owners(clone)["bert.encoder.layer.0.attention"]
    q = clone.bert.encoder.layer[0].attention.self.query.parametrizations.weight[0]
    o = clone.bert.encoder.layer[0].attention.output.dense.parametrizations.weight[0]
    assert q.owners[0] is co and o.owners[0] is co  # the tie survives copying
    for ow in owners(model).values():
        assert isinstance(ow, ScheduledTopK)
        ow.set_k(0.25)  # movement-pruning baseline style: k from a schedule, not sigma
    x = bert_inputs()
    with torch.no_grad():
        before = model(**x).logits
    assert densities(model)["bert.encoder.layer.0.intermediate.dense.weight"] == 0.25
    freeze(model)
    assert model.bert.encoder.layer[0].intermediate.dense.weight_mask.sum() == 16 * 32
    with torch.no_grad():
        assert torch.equal(model(**x).logits, before)
