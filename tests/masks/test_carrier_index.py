"""Tied segments with explicit positions (heads interleaved in a fused weight): same mask, same gradients."""
import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from leap_fx.masks.carrier import GranuleMask, granule_sums
from leap_fx.masks.topk import LeapScores


def _interleaved(heads=3, d=2):
    """Rows of a fused [heads, 3, head_dim] qkv weight: (q positions, k positions, v positions)."""
    rows = torch.arange(heads * 3 * d).view(heads, 3, d)
    return [rows[:, r].reshape(-1).tolist() for r in range(3)]


def test_index_segment_masks_exactly_the_listed_rows():
    q, k, v = _interleaved()
    o = LeapScores((3,), temperature=1.0, sigma_init=0.0)
    o.scores.data = torch.tensor([1.0, -1.0, 2.0])  # keep 2 of 3: heads 0 and 2
    m = GranuleMask()
    for pos in (q, k, v):
        m.add_tied(o, (18, 4), 0, min(pos), len(pos), 2, index=pos)
    hard = m.mask((18, 4), hard=True)[:, 0]
    dead = set(q[2:4] + k[2:4] + v[2:4])  # head 1's rows of q, k and v
    assert hard.tolist() == [0.0 if r in dead else 1.0 for r in range(18)]
    assert o.count == 3 * 6 * 4


def test_index_segment_gradients_equal_the_contiguous_layout():
    """The same weights stored interleaved or q|k|v back to back give the same score gradients."""
    torch.manual_seed(0)
    heads, d, e = 3, 2, 4
    q, k, v = _interleaved(heads, d)
    perm = torch.tensor(q + k + v)  # interleaved row -> contiguous row order
    w = torch.randn(18, e)
    grads = []
    for layout in ("contiguous", "interleaved"):
        lin = nn.Linear(e, 18, bias=False)
        o = LeapScores((heads,), temperature=1.0, sigma_init=0.0)
        o.scores.data = torch.tensor([0.3, -0.4, 0.8])
        mask = GranuleMask()
        with torch.no_grad():
            lin.weight.copy_(w[perm] if layout == "contiguous" else w)
        for j, pos in enumerate((q, k, v)):
            idx = None if layout == "contiguous" else pos
            mask.add_tied(o, (18, e), 0, j * heads * d if idx is None else min(pos), heads * d, d, index=idx)
        parametrize.register_parametrization(lin, "weight", mask)
        x = torch.randn(5, e, generator=torch.Generator().manual_seed(1))
        out = lin(x)
        out = out[:, perm.argsort()] if layout == "contiguous" else out  # the same output rows either way
        out.pow(2).sum().backward()
        grads.append(o.scores.grad.clone())
        sums = granule_sums([(mask, lin.parametrizations.weight.original)])
        grads.append(sums[id(o)])
    assert torch.allclose(grads[0], grads[2], atol=1e-6) and torch.allclose(grads[1], grads[3], atol=1e-6)


def test_bad_index_is_a_value_error():
    o = LeapScores((2,), temperature=1.0, sigma_init=0.0)
    with pytest.raises(ValueError, match="does not fit"):
        GranuleMask().add_tied(o, (8, 3), 0, 0, 4, 2, index=[0, 1, 9, 10])
