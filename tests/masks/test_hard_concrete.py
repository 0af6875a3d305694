"""Hard-concrete gates: sampling statistics and the deterministic gate against their closed forms."""
import math

import pytest
import torch

from leap_fx.masks import GranuleMask
from leap_fx.masks.hard_concrete import (
    LIMITS,
    LOG_ALPHA_RANGE,
    TEMPERATURE,
    VALUE_FACTOR,
    HardConcrete,
    log_alpha_for,
)

L, R = LIMITS


def p_zero(la):
    """Q(0) = P(z = 0) = sigmoid(beta log(-l / r) - log_alpha)."""
    return torch.sigmoid(TEMPERATURE * math.log(-L / R) - la)


def p_one(la):
    """P(z = 1) = sigmoid(log_alpha - beta log((1 - l) / (r - 1)))."""
    return torch.sigmoid(la - TEMPERATURE * math.log((1 - L) / (R - 1)))


def mean_z(la: float, n: int = 20001) -> float:
    """E[z] = integral_0^1 P(z > t) dt, P(z > t) = 1 - sigmoid(beta logit((t - l) / (r - l)) - log_alpha)."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)[1:-1]
    x = (t - L) / (R - L)
    surv = 1 - torch.sigmoid(TEMPERATURE * torch.log(x / (1 - x)) - la)
    return float(torch.trapezoid(surv, t)) + 0.5 / (n - 1) * (float(surv[0]) + float(surv[-1]))


@pytest.mark.parametrize("la", [-2.0, 0.0, 1.5])
def test_sampling_statistics_match_the_closed_forms(la):
    torch.manual_seed(0)
    n = 200_000
    g = HardConcrete((n,))
    with torch.no_grad():
        g.log_alpha.fill_(la)
    z = g.mask().detach()
    assert float((z == 0).float().mean()) == pytest.approx(float(p_zero(torch.tensor(la))), abs=4e-3)
    assert float((z == 1).float().mean()) == pytest.approx(float(p_one(torch.tensor(la))), abs=4e-3)
    assert float(z.mean()) == pytest.approx(mean_z(la), abs=4e-3)
    assert float(g.expected_density().detach()) == pytest.approx(1 - float(p_zero(torch.tensor(la))), abs=1e-6)
    assert 0.0 <= float(z.min()) and float(z.max()) <= 1.0


def test_one_sample_per_step_shared_by_every_call():
    g = HardConcrete((7,))
    with torch.no_grad():
        g.log_alpha.fill_(0.0)
    a, b = g.mask(), g.mask()
    assert torch.equal(a, b)  # every weight the gate governs sees the same z
    g.resample()
    assert not torch.equal(a, g.mask())


def test_sample_is_differentiable_in_log_alpha():
    g = HardConcrete((50,))
    with torch.no_grad():
        g.log_alpha.fill_(0.0)
    g.mask().sum().backward()
    assert (g.log_alpha.grad >= 0).all() and g.log_alpha.grad.sum() > 0
    g.log_alpha.grad = None
    g.expected_density().backward()
    assert (g.log_alpha.grad > 0).all()


def test_deterministic_gate_closed_form():
    """round(sum Q(0)) smallest log_alpha are 0, the others sigmoid(0.8 log_alpha / beta)."""
    la = torch.tensor([3.0, -3.0, 0.5, -0.2, 2.0, -4.0, 1.0, 0.0])
    g = HardConcrete((8,))
    with torch.no_grad():
        g.log_alpha.copy_(la)
    zeros = round(float(p_zero(la).clamp(1e-6, 1 - 1e-6).sum()))
    want = torch.sigmoid(VALUE_FACTOR * la / TEMPERATURE)
    want[torch.argsort(la)[:zeros]] = 0.0
    got = g.deterministic_mask()
    assert zeros == 2 and torch.allclose(got, want)  # sum Q(0) = 2.3
    assert torch.equal(g.hard_mask(), (want != 0).float())
    g.set_mode("frozen")
    assert torch.equal(g.mask(), got) and not g.mask().requires_grad
    g.set_mode("off")
    assert torch.equal(g.mask(), torch.ones(8)) and torch.equal(g.deterministic_mask(), torch.ones(8))


def test_single_gate_deterministic_is_closed_when_likely_zero():
    g = HardConcrete((1,))
    with torch.no_grad():
        g.log_alpha.fill_(-2.0)  # Q(0) = sigmoid(-1.6 + 2) > 0.5: round(Q(0)) = 1 zero
    assert float(g.deterministic_mask()) == 0.0
    with torch.no_grad():
        g.log_alpha.fill_(-1.2)  # Q(0) = sigmoid(-0.4) < 0.5: kept, scaled
    assert float(g.deterministic_mask()) == pytest.approx(float(torch.sigmoid(torch.tensor(-0.96 / TEMPERATURE))))


def test_init_drop_rate_and_clamp():
    g = HardConcrete((3,), drop_rate=0.01)
    assert float(p_zero(g.log_alpha.detach())[0]) == pytest.approx(0.01, rel=1e-4)
    assert log_alpha_for(0.5) == pytest.approx(TEMPERATURE * math.log(-L / R))
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([-9.0, 0.0, 9.0]))
    g.clamp_()
    assert g.log_alpha.tolist() == pytest.approx([LOG_ALPHA_RANGE[0], 0.0, LOG_ALPHA_RANGE[1]])
    with pytest.raises(ValueError, match="mode"):
        g.set_mode("bogus")


def test_fold_bakes_exactly_the_deterministic_gate():
    """The carrier uses the deterministic gate in eval mode; fold bakes exactly that."""
    from torch.nn.utils import parametrize
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    g = HardConcrete((4,))
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([2.0, -3.0, 0.3, 1.0]))
    carrier = GranuleMask().add_tied(g, (4, 6), 0, 0, 4, 1)
    parametrize.register_parametrization(lin, "weight", carrier)
    lin.eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        y = lin(x)
        parametrize.remove_parametrizations(lin, "weight", leave_parametrized=True)
        assert torch.equal(lin(x), y)
        assert lin.weight[1].abs().sum() == 0
