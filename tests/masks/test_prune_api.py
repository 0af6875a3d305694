import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from leap_fx.masks.prune_api import LeapPruning, leap_prune


def _sigma_for(k, T=1.0):
    return T * math.log(k / (1 - k))


def test_apply_with_block_scores_and_remove():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    scores = torch.tensor([[0.1, 0.9, -0.3, 0.4], [0.8, -1.0, 0.2, 0.0]])  # 2x4 grid of 2x2 blocks
    LeapPruning.apply(lin, "weight", scores=scores, sigma=_sigma_for(0.5, 4.0), temperature=4.0, block=(2, 2))
    assert hasattr(lin, "weight_orig") and hasattr(lin, "weight_mask")
    grid = torch.tensor([[0.0, 1, 0, 1], [1, 0, 1, 0]])  # top 4 of 8 scores: 0.9, 0.8, 0.4, 0.2
    expected = grid.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(lin.weight_mask, expected)
    assert torch.equal(lin.weight, lin.weight_orig * expected)
    prune.remove(lin, "weight")
    assert not hasattr(lin, "weight_orig") and isinstance(lin.weight, nn.Parameter)
    assert (lin.weight == 0).sum() == 16


def test_tensor_sigma_and_temperature_accepted():
    lin = nn.Linear(10, 1)
    LeapPruning.apply(lin, "weight", scores=torch.arange(10.0).view(1, 10), sigma=torch.tensor(0.0),
                      temperature=torch.tensor(3.0))
    assert torch.equal(lin.weight_mask, torch.tensor([[0.0] * 5 + [1.0] * 5]))


def test_global_unstructured_keeps_top_k_of_concatenated_scores():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(3, 2)
    sa, sb = torch.randn(3, 4), torch.randn(2, 3) + 1.0  # b's scores are larger on average
    prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=LeapPruning,
                              importance_scores={(a, "weight"): sa, (b, "weight"): sb},
                              sigma=_sigma_for(0.4), temperature=1.0)
    allscores = torch.cat([sa.flatten(), sb.flatten()])
    j = math.ceil(0.4 * 18 - 1e-6)
    thresh = torch.topk(allscores, j).values.min()
    assert a.weight_mask.sum() + b.weight_mask.sum() == j
    assert torch.equal(a.weight_mask, (sa >= thresh).float()) and torch.equal(b.weight_mask, (sb >= thresh).float())
    for m in (a, b):
        prune.remove(m, "weight")
    assert (a.weight != 0).sum() + (b.weight != 0).sum() == j


def test_leap_prune_default_scores_are_block_magnitudes():
    lin = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1, 0.1, 0.1], [1, 1, 0.1, 0.1], [0.2, 0.2, 5, 5], [0.2, 0.2, 5, 5]]))
    out = leap_prune(lin, "weight", sigma=0.0, temperature=1.0, block=(2, 2))  # keep 2 of 4 blocks
    assert out is lin
    expected = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    assert torch.equal(lin.weight_mask, expected)
    lin2 = nn.Linear(3, 2)
    leap_prune(lin2, sigma=_sigma_for(0.5), temperature=1.0)
    w = lin2.weight_orig.detach().abs()
    assert torch.equal(lin2.weight_mask.bool(), w >= torch.topk(w.flatten(), 3).values.min())


def test_compute_mask_respects_default_mask_and_bad_shapes():
    m = LeapPruning(scores=torch.tensor([3.0, 2.0, 1.0, 0.0]), sigma=0.0, temperature=1.0)
    out = m.compute_mask(torch.zeros(4), torch.tensor([0.0, 1, 1, 1]))
    assert torch.equal(out, torch.tensor([0.0, 1, 0, 0]))
    with pytest.raises(ValueError, match="expected"):
        LeapPruning(scores=torch.zeros(3, 3), block=(2, 2)).compute_mask(torch.zeros(4, 4), torch.ones(4, 4))
    with pytest.raises(ValueError, match="pass scores="):
        LeapPruning(block=(2, 2))
    with pytest.raises(ValueError, match="choose a block dividing"):
        leap_prune(nn.Linear(3, 4), block=(2, 2))
