import math

import pytest
import torch
from torch import nn

import leap_fx
from leap_fx.masks import densities, owners, param_groups
from leap_fx.methods.leap.config import LeapConfig
from leap_fx.methods.leap.regularizer import LeapRegularizer
from leap_fx.methods.registry import prepare_masks as prepare
from tests.conftest import tiny_bert
from tests.plans import bert_plan

K0 = 1 / (1 + math.exp(-5.0))


def _two_layer(k1, k2, T=1.0):
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2))  # n1 = 24, n2 = 8
    prepare(model, LeapConfig(0.5, temperature=T, exclude=()))
    own = owners(model)
    with torch.no_grad():
        own["0.weight"].sigma.fill_(T * math.log(k1 / (1 - k1)))
        own["1.weight"].sigma.fill_(T * math.log(k2 / (1 - k2)))
    return model, own


def test_eq5_eq7_above_target_with_detached_lambda():
    model, own = _two_layer(0.9, 0.5)
    reg = LeapRegularizer(model, 0.3, lambda_max=160.0, lambda_min=10.0, ratio="soft")
    out = reg()
    R = (0.9 * 24 + 0.5 * 8) / 32  # 0.8
    L = (R - 0.3) ** 2
    lam = max(160.0 * L / 0.7 ** 2, 10.0)
    assert reg.R == pytest.approx(R, abs=1e-6) and reg.L_reg == pytest.approx(L, abs=1e-6)
    assert reg.lam == pytest.approx(lam, rel=1e-5) and out.item() == pytest.approx(lam * L, rel=1e-5)
    assert isinstance(reg.R, float) and isinstance(reg.lam, float)
    out.backward()
    # lambda is a constant for autograd: d(out)/d sigma_1 = lam * 2 (R - Rt) * k1 (1 - k1) / T * n1 / N
    expected = lam * 2 * (R - 0.3) * 0.9 * 0.1 * 24 / 32
    assert own["0.weight"].sigma.grad.item() == pytest.approx(expected, rel=1e-4)
    assert own["0.weight"].scores.grad is None


def test_eq5_below_target_is_zero_and_lambda_min():
    model, own = _two_layer(0.9, 0.5)
    reg = LeapRegularizer(model, 0.9)
    out = reg()
    assert out.item() == 0.0 and reg.L_reg == 0.0 and reg.lam == 10.0
    out.backward()
    assert own["0.weight"].sigma.grad.item() == 0.0


def test_eq7_lambda_clamped_at_lambda_min():
    model, _ = _two_layer(0.9, 0.5)  # R = 0.8
    reg = LeapRegularizer(model, 0.75, lambda_max=160.0, lambda_min=10.0, ratio="soft")
    out = reg()
    assert 160.0 * 0.05 ** 2 / 0.25 ** 2 < 10.0  # raw Eq. 7 value 6.4 is below lambda_min
    assert reg.lam == 10.0 and out.item() == pytest.approx(10.0 * 0.05 ** 2, rel=1e-4)
    reg_full = LeapRegularizer(model, 1.0)  # (1 - R_t)^2 = 0: no division by zero
    assert reg_full().item() == 0.0 and reg_full.lam == 10.0


def test_tied_owner_counts_elements_once_and_from_config():
    cfg = LeapConfig(0.4, "structured", lambda_max=80.0, lambda_min=5.0, ratio="soft")
    model = prepare(tiny_bert(), cfg, bert_plan())
    reg = LeapRegularizer.from_config(model, cfg)
    assert reg.lambda_max == 80.0 and reg.lambda_min == 5.0 and reg.target == 0.4
    assert len(reg.owners) == 4 and reg.total == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    reg()
    assert reg.R == pytest.approx(K0, abs=1e-6)
    with torch.no_grad():  # halve k of one attention owner only -> R moves by its element share
        o = owners(model)["bert.encoder.layer.0.attention"]
        o.sigma.fill_(0.0)
    reg()
    assert reg.R == pytest.approx(K0 + (0.5 - K0) * 4096 / reg.total, abs=1e-6)


def test_scheduled_owner_counts_but_gets_no_grad():
    from leap_fx.masks import ScheduledTopK
    cfg = LeapConfig(0.5, temperature=1.0, exclude=())
    mixed = lambda shape, key, dev: ScheduledTopK(shape, key=key) if key == "1.weight" else leap_fx.build_method(cfg).make_owner(shape, key, dev)  # noqa: E731
    model = prepare(nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2)), cfg, owner=mixed)
    own = owners(model)
    with torch.no_grad():
        own["0.weight"].sigma.fill_(math.log(0.9 / 0.1))
    own["1.weight"].set_k(0.25)
    reg = LeapRegularizer(model, 0.3, ratio="soft")
    reg().backward()
    assert reg.R == pytest.approx((0.9 * 24 + 0.25 * 8) / 32, abs=1e-6)
    assert own["1.weight"].scores.grad is None and own["0.weight"].sigma.grad.item() > 0


def test_kept_ratio_counts_topk_granules_with_soft_gradient():
    """ratio="kept": R's value is ceil(k g)/g per owner (what the mask keeps), its gradient is Eq. 5's."""
    cfg = LeapConfig(0.25, "structured", ratio="kept")
    model = prepare(tiny_bert(), cfg, bert_plan())  # 4 heads per layer, 64 neurons per layer
    own = owners(model)
    att0 = own["bert.encoder.layer.0.attention"]
    with torch.no_grad():
        for o in own.values():
            o.sigma.fill_(o.temperature * math.log(0.3 / 0.7))  # k = 0.3 everywhere
    kept = LeapRegularizer.from_config(model, cfg)
    soft = LeapRegularizer(model, 0.25, cfg.lambda_max, cfg.lambda_min, ratio="soft")
    out_kept = kept()
    assert soft() is not None and soft.R == pytest.approx(0.3, abs=1e-6)
    # heads: ceil(0.3 * 4) = 2 of 4 = 0.5; neurons: ceil(0.3 * 64) = 20 of 64 = 0.3125
    att_n, ffn_n = 4 * 32 * 32, 2 * 32 * 64
    expected = (0.5 * att_n + 20 / 64 * ffn_n) / (att_n + ffn_n)
    assert kept.R == pytest.approx(expected, abs=1e-6)
    d = densities(model)  # the masks keep exactly what kept R counts
    assert d["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(0.5)
    assert d["bert.encoder.layer.0.intermediate.dense.weight"] == pytest.approx(20 / 64)
    out_kept.backward()
    g_kept = att0.sigma.grad.clone()
    for o in own.values():
        o.sigma.grad = None
    # same slope dR/dsigma, scaled by the (different) lambda * 2 (R - R_t) factor
    soft_out = soft()
    soft_out.backward()
    ratio = (kept.lam * (kept.R - 0.25)) / (soft.lam * (soft.R - 0.25))
    assert g_kept.item() == pytest.approx(att0.sigma.grad.item() * ratio, rel=1e-4)


def test_kept_ratio_reaches_target_where_soft_stops_a_head_above():
    """Below-target k with coarse granules: soft R says 'done' while the masks still keep more."""
    model = prepare(tiny_bert(), LeapConfig(0.3, "structured"), bert_plan())
    with torch.no_grad():
        for o in owners(model).values():
            o.sigma.fill_(o.temperature * math.log(0.29 / 0.71))  # k = 0.29: 2 of 4 heads, 19 of 64 neurons
    soft = LeapRegularizer(model, 0.3, ratio="soft")
    kept = LeapRegularizer(model, 0.3, ratio="kept")
    assert soft().item() == 0.0 and soft.R < 0.3
    assert kept().item() > 0.0 and kept.R > 0.3


def test_bad_arguments():
    model, _ = _two_layer(0.9, 0.5)
    for t in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="fraction to keep"):
            LeapRegularizer(model, t)
    with pytest.raises(ValueError, match="swap them"):
        LeapRegularizer(model, 0.5, lambda_max=1.0, lambda_min=2.0)
    with pytest.raises(ValueError, match="prepare"):
        LeapRegularizer(nn.Linear(2, 2), 0.5)
    with pytest.raises(ValueError, match="kept"):
        LeapRegularizer(model, 0.5, ratio="hard")


def test_regularizer_drives_toy_model_to_target():
    """Toy MLP distilled from its dense copy (MSE). T = 1 and Adam lr 0.05 for S and sigma (weights 1e-3):
    sigma must travel from 5T to T*logit(0.3) ~ -0.85; with T = 1 it gets there in ~370 steps and then
    holds R within 0.5 pt (larger lr overshoots below the target, where Eq. 5 is flat)."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    student = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    student.load_state_dict(teacher.state_dict())
    cfg = LeapConfig(0.3, temperature=1.0, exclude=())
    prepare(student, cfg)
    reg = LeapRegularizer.from_config(student, cfg)
    opt = torch.optim.Adam(param_groups(student, lr=1e-3, mask_lr=0.05))
    g = torch.Generator().manual_seed(1)
    for step in range(500):
        x = torch.randn(32, 16, generator=g)
        loss = nn.functional.mse_loss(student(x), teacher(x)) + reg()
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for o in owners(student).values():
                assert torch.isfinite(o.scores.grad).all() and o.scores.grad.abs().sum() > 0
                assert torch.isfinite(o.sigma.grad) and o.sigma.grad.abs() > 0
        opt.step()
    assert reg.R == pytest.approx(0.3, abs=0.005)
    total = sum(o.count for o in owners(student).values())
    measured = sum(d * owners(student)[n].count for n, d in densities(student).items()) / total
    assert measured == pytest.approx(0.3, abs=0.01)  # hard masks follow (ceil adds < 1 granule per matrix)
