import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from leap_fx.masks import GranuleMask as LeapMask
from leap_fx.masks import LeapScores, ScheduledTopK, keep_count, topk_mask

K0 = 1 / (1 + math.exp(-5.0))  # sigmoid(5): k at init (sigma = 5T)


def test_keep_count_is_ceil_clamped():
    assert keep_count(0.5, 4) == 2 and keep_count(0.51, 4) == 3 and keep_count(1.0, 7) == 7
    assert keep_count(1e-9, 100) == 1  # at least one granule survives
    assert keep_count(K0, 1024) == math.ceil(K0 * 1024)
    assert keep_count(0.3, 10) == 3  # 0.3 * 10 = 3.0000000000000004 in float: no spurious round-up


@pytest.mark.parametrize("n, j", [(10, 1), (10, 5), (10, 6), (10, 9), (10, 10), (1, 1)])
def test_topk_mask_exact_count_even_with_ties(n, j):
    for scores in (torch.zeros(n), torch.randn(n)):
        m = topk_mask(scores, j)
        assert m.sum().item() == j
        if scores.abs().sum() > 0:  # kept scores dominate dropped ones
            assert scores[m.bool()].min() >= scores[~m.bool()].max() if j < n else True


def test_topk_does_not_sort(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("full sort used")
    monkeypatch.setattr(torch, "sort", boom)
    monkeypatch.setattr(torch, "argsort", boom)
    monkeypatch.setattr(torch.Tensor, "sort", boom)
    o = LeapScores((64,), temperature=1.0, sigma_init=0.0)
    o.scores.data.normal_()
    assert o.hard_mask().sum() == 32


def test_scores_init_k_and_density():
    o = LeapScores((8, 16), temperature=32.0)
    assert o.sigma.item() == 160.0 and o.sigma.dim() == 0
    assert abs(o.k().item() - K0) < 1e-6
    n = o.granules
    d = o.hard_mask().mean().item()
    assert 0 <= d - o.k().item() < 1 / n


def test_scheduled_topk_keeps_k_set_from_outside_and_trains_only_scores():
    o = ScheduledTopK((10,))
    o.set_k(0.3)
    o.scores.data.normal_()
    assert o.expected_density().item() == pytest.approx(0.3)
    m = o.mask()
    assert m.sum().item() == 3
    (m * torch.arange(10.0)).sum().backward()
    assert not o.k.requires_grad and o.scores.grad is not None
    assert "k" in o.state_dict()  # the schedule's k travels with checkpoints


def _block_setup(sigma_grad, T=2.0):
    torch.manual_seed(0)
    lin = nn.Linear(6, 4, bias=False)
    o = LeapScores((2, 2), temperature=T, sigma_init=0.0, sigma_grad=sigma_grad)  # k = 0.5 -> 2 of 4 blocks
    o.scores.data = torch.tensor([[0.3, -1.0], [2.0, 0.1]])
    parametrize.register_parametrization(lin, "weight", LeapMask(o, (2, 3)))
    x, c = torch.randn(5, 6), torch.randn(5, 4)
    (lin(x) * c).sum().backward()
    W = lin.parametrizations.weight.original.detach()
    dm = (c.T @ x) * W  # dL/dW' * W per element
    dm_g = dm.view(2, 2, 2, 3).sum((1, 3))  # summed per 2x3 block
    m_g = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # top-2 scores: 2.0 and 0.3
    return lin, o, dm_g, m_g


def test_block_mask_constant_inside_blocks():
    lin, o, _, m_g = _block_setup("chain")
    with torch.no_grad():
        W, Wp = lin.parametrizations.weight.original, lin.weight
    expected = m_g.repeat_interleave(2, 0).repeat_interleave(3, 1)
    assert torch.equal(Wp, W * expected)
    assert torch.equal(o.hard_mask(), m_g)


@pytest.mark.parametrize("mode", ["chain", "ste"])
def test_straight_through_gradients_match_hand_computation(mode):
    _, o, dm_g, m_g = _block_setup(mode)
    assert torch.allclose(o.scores.grad, dm_g, atol=1e-6)  # identity through Top-K, summed per granule
    k, T = 0.5, 2.0
    dk = k * (1 - k) / T if mode == "chain" else 1.0
    expected = dk * (m_g * dm_g).sum()
    assert torch.allclose(o.sigma.grad, expected, atol=1e-6)
    assert o.sigma.grad.abs() > 0 and torch.isfinite(o.scores.grad).all()


def test_tied_owner_sums_gradients_over_members():
    torch.manual_seed(1)
    up, down = nn.Linear(3, 4, bias=False), nn.Linear(4, 3, bias=False)
    o = LeapScores((4,), temperature=1.0, sigma_init=0.0)  # k = 0.5: keep 2 of 4 neurons
    o.scores.data = torch.tensor([0.5, -0.2, 0.9, 0.0])
    parametrize.register_parametrization(up, "weight", LeapMask().add_tied(o, (4, 3), 0, 0, 4, 1))
    parametrize.register_parametrization(down, "weight", LeapMask().add_tied(o, (3, 4), 1, 0, 4, 1))
    assert o.count == 24
    x = torch.randn(5, 3)
    loss = down(torch.relu(up(x))).pow(2).sum()
    loss.backward()
    keep = torch.tensor([1.0, 0, 1, 0])
    assert torch.equal(up.weight.detach().abs().sum(1) > 0, keep.bool())
    assert torch.equal(down.weight.detach().abs().sum(0) > 0, keep.bool())
    # hand: d loss / d W' via a plain autograd copy, times W, summed per neuron over both members
    Wu = up.parametrizations.weight.original.detach().clone().requires_grad_(True)
    Wd = down.parametrizations.weight.original.detach().clone().requires_grad_(True)
    Wu_m, Wd_m = (Wu * keep[:, None]).detach().requires_grad_(True), (Wd * keep[None]).detach().requires_grad_(True)
    (torch.relu(x @ Wu_m.T) @ Wd_m.T).pow(2).sum().backward()
    dm = (Wu_m.grad * Wu.detach()).sum(1) + (Wd_m.grad * Wd.detach()).sum(0)
    assert torch.allclose(o.scores.grad, dm, atol=1e-5)
    assert torch.allclose(o.sigma.grad, 0.25 * (keep * dm).sum(), atol=1e-5)


def test_gqa_segment_is_max_over_q_heads():
    o = LeapScores((4,), temperature=1.0, sigma_init=0.0)  # 4 q heads, 2 kv heads, head_dim 2
    o.scores.data = torch.tensor([1.0, 0.5, -1.0, -2.0])  # keep q heads 0, 1 -> kv head 0 only
    k_mask = LeapMask().add_tied(o, (4, 6), 0, 0, 4, 2, group=2)
    m = k_mask.mask((4, 6), hard=True)
    assert torch.equal(m[:, 0], torch.tensor([1.0, 1, 0, 0]))
    o.scores.data = torch.tensor([1.0, -0.5, -1.0, 2.0])  # keep q heads 0, 3 -> both kv heads
    assert k_mask.mask((4, 6), hard=True).min() == 1


def test_partial_slice_leaves_uncovered_indices_kept():
    o = LeapScores((2,), temperature=1.0, sigma_init=-10.0)  # keep 1 of 2
    o.scores.data = torch.tensor([0.0, 1.0])
    m = LeapMask().add_tied(o, (3, 8), 1, 2, 4, 2).mask((3, 8), hard=True)
    assert torch.equal(m[0], torch.tensor([1.0, 1, 0, 0, 1, 1, 1, 1]))


def test_bad_block_grid_is_a_value_error():
    lin = nn.Linear(6, 4)
    with pytest.raises(ValueError, match="give scores of shape"):
        parametrize.register_parametrization(lin, "weight", LeapMask(LeapScores((3, 3)), (2, 2)))
    with pytest.raises(ValueError, match="use 'chain' or 'ste'"):
        LeapScores((2,), sigma_grad="sigmoid")
