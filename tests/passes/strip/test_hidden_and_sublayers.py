"""Strip, extended for CoFi: hidden dimensions (the residual family) and whole sub-layers, exact on tiny
BERT / RoBERTa / ViT / GPT-2 / Llama, checked by strip's own before/after self-check and in onnxruntime."""
import copy

import pytest
import torch

from passes.analyze import analyze
from passes.analyze.plan import Plan
from passes.strip import StripError, strip
from passes.strip.masked_norm import install, installed, masked_norm
from passes.strip.tensors import indices, tensor
from tests import models
from tests.passes.builders import MODELS, logits

torch.set_num_threads(1)


@torch.no_grad()
def zero_slice(model, sl, granules, unit):
    idx = torch.as_tensor(indices(sl, granules, unit))
    tensor(model, sl.weight_name).index_fill_(sl.axis, idx, 0.0)


@torch.no_grad()
def cofi_like(model, plan, drop_dims, dead=(), heads=1):
    """What CoFi's fold leaves: dropped hidden dims (zero norm weights / biases and reader columns,
    masked-statistics norms), ``dead`` families with every out/down column zero, and ``heads`` heads
    zeroed in every other attention family."""
    res = plan.residual
    keep = torch.ones(res.width, dtype=torch.bool)
    keep[list(drop_dims)] = False
    for sl in res.slices:
        if sl.role in ("norm", "read"):
            zero_slice(model, sl, list(drop_dims), 1)
        if sl.role == "norm" and sl.bias is not None:
            tensor(model, f"{sl.fqn}.{sl.bias}")[~keep] = 0.0
    install(model, res, keep)
    for key, fam in plan.families.items():
        if key in dead:
            out = fam.out if fam.kind == "attention" else fam.down
            zero_slice(model, out, list(range(fam.granules)), getattr(fam, "head_dim", 1))
        elif fam.kind == "attention":
            zero_slice(model, fam.out, list(range(heads)), fam.head_dim)
    return keep


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hidden_dims_and_sublayers_strip_exactly(name):
    model, x = MODELS[name]()
    plan = analyze(model, x, residual=True)
    attn = [k for k, f in plan.families.items() if f.kind == "attention"]
    ffn = [k for k, f in plan.families.items() if f.kind == "ffn"]
    dead = [attn[0], ffn[-1]]
    keep = cofi_like(model, plan, drop_dims=range(0, 32, 3), dead=dead)
    with torch.no_grad():
        before = logits(model, x)
    params = sum(p.numel() for p in model.parameters())
    rep = strip(model, plan, x, sublayers=True)  # raises StripError on any output change
    assert rep.max_rel_diff <= 1e-5
    assert rep.families["residual"]["kept"] == [i for i in range(32) if keep[i]]
    assert rep.plan.residual.width == int(keep.sum())
    assert not installed(model, rep.plan.residual)  # plain norms over the kept dims now
    for key in dead:
        assert rep.families[key]["sublayer"] and key not in rep.plan.families
    assert set(rep.replaced.values()) == {"ConstantSublayer"}
    assert sum(p.numel() for p in model.parameters()) < params
    with torch.no_grad():
        torch.testing.assert_close(logits(model, x), before, rtol=1e-5, atol=1e-5)
    norm = model.get_submodule(next(iter(plan.residual.norms)))
    assert norm.weight.shape == (int(keep.sum()),)


def test_strip_report_plan_round_trips_with_the_residual_family():
    model, x = models.bert()
    plan = analyze(model, x, residual=True)
    assert Plan.from_json(plan.to_json()) == plan
    assert "residual" in plan.table() and "residual" not in plan.families
    cofi_like(model, plan, drop_dims=[1, 5])
    rep = strip(model, plan, x)
    again = Plan.from_dict(rep.plan.to_dict())
    assert again.residual.width == 30 and again == rep.plan


def test_plain_norms_keep_every_dim():
    """Without masked statistics the dims are not removable (the plain norm reads them): nothing cut."""
    model, x = models.bert()
    plan = analyze(model, x, residual=True)
    cofi_like(model, plan, drop_dims=[0, 1])
    from passes.strip.masked_norm import uninstall
    uninstall(model, plan.residual)
    rep = strip(model, plan, x)
    fam = rep.families["residual"]
    assert len(fam["kept"]) == 32 and "masked statistics" in fam["note"]


def test_reader_with_live_column_keeps_every_dim():
    model, x = models.bert()
    plan = analyze(model, x, residual=True)
    cofi_like(model, plan, drop_dims=[0, 1])
    with torch.no_grad():
        model.bert.pooler.dense.weight[:, 0] = 1.0
    rep = strip(model, plan, x)
    assert len(rep.families["residual"]["kept"]) == 32
    assert "pooler" in rep.families["residual"]["note"]


def test_masked_norm_matches_layer_norm_over_the_kept_dims():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(3, 5, 12, generator=g), torch.randn(12, generator=g), torch.randn(12, generator=g)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    k = keep.nonzero().view(-1)
    want = torch.nn.functional.layer_norm(x[..., k], (len(k),), w[k], b[k], 1e-5)
    got = masked_norm(x, w, b, keep, "layer", 1e-5)
    torch.testing.assert_close(got[..., k], want)
    torch.testing.assert_close(got[..., ~keep], b[~keep].expand(3, 5, -1))
    rms = masked_norm(x, w, None, keep, "rms", 1e-6)
    want = x[..., k] * torch.rsqrt(x[..., k].pow(2).mean(-1, keepdim=True) + 1e-6) * w[k]
    torch.testing.assert_close(rms[..., k], want)


def test_slim_model_with_constant_sublayers_exports_and_reloads(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from passes.export import export_onnx, load_slim, save_slim
    model, x = models.bert()
    dense = copy.deepcopy(model)
    plan = analyze(model, x, residual=True)
    fams = list(plan.families)
    cofi_like(model, plan, drop_dims=range(0, 32, 4), dead=fams[:2])
    rep = strip(model, plan, x, sublayers=True)
    export_onnx(model, x, str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: x[i.name].numpy() for i in sess.get_inputs()}
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, feed)[0], logits(model, x).numpy(), atol=1e-5)
    save_slim(model, tmp_path / "slim", rep.plan, rep)
    back = load_slim(tmp_path / "slim", dense)
    with torch.no_grad():
        torch.testing.assert_close(logits(back, x), logits(model, x))


def test_sublayer_replacement_falls_back_to_the_placeholder():
    """nn.TransformerEncoderLayer reads ``self_attn.batch_first``: the constant does not fit, strip keeps
    the zeroed placeholder head for that family and still succeeds (each replacement is checked)."""
    model, x = models.torch_encoder()
    plan = analyze(model, x)
    fam = plan.attention()[0]
    zero_slice(model, fam.out, list(range(fam.num_heads)), fam.head_dim)
    rep = strip(model, plan, x, sublayers=True)
    assert rep.families[fam.fqn]["placeholder"] is not None and "sublayer" not in rep.families[fam.fqn]
    assert fam.fqn in rep.plan.families and not rep.replaced.get(fam.fqn) == "ConstantSublayer"


def test_without_sublayers_the_placeholder_stays():
    model, x = models.bert()
    plan = analyze(model, x)
    fam = plan.attention()[0]
    zero_slice(model, fam.out, list(range(fam.num_heads)), fam.head_dim)
    rep = strip(model, plan, x)
    assert rep.families[fam.fqn]["placeholder"] is not None and not rep.replaced


def test_strip_refuses_norm_with_another_formula():
    model, x = models.bert()
    plan = analyze(model, x, residual=True)
    install(model, plan.residual, torch.ones(32, dtype=torch.bool))
    hook = installed(model, plan.residual)[next(iter(plan.residual.norms))]
    hook.kind = "rms"  # a wrong formula for a LayerNorm: refused on the first all-kept call
    with pytest.raises(ValueError, match="cannot be masked"):
        model(**x)
    assert StripError  # imported for the module's public surface
