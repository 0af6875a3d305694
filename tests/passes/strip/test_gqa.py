"""GQA in strip: q heads removed inside kv groups, whole groups, what a layer cannot realise
(passes/strip/gqa.py, passes/strip/heads.py)."""
import itertools

import pytest
import torch

from passes.analyze import analyze
from passes.strip import strip
from passes.strip.gqa import gqa_keep, realise
from passes.strip.tensors import indices, tensor
from tests.lm_models import llama_gqa_lm, qwen3_lm


def _brute(scores, kv, budget):
    """Best realisable keep set by enumeration: the same number of q heads in every kept group."""
    h = len(scores)
    group = h // kv
    best = 0.0
    for n in range(1, budget + 1):
        for keep in itertools.combinations(range(h), n):
            counts = {j: sum(1 for q in keep if q // group == j) for j in range(kv)}
            if len({c for c in counts.values() if c}) == 1:
                best = max(best, sum(scores[q] for q in keep))
    return best


@pytest.mark.parametrize("heads,kv", [(6, 2), (8, 4), (6, 3), (4, 1)])
def test_gqa_keep_is_realisable_and_optimal(heads, kv):
    g = torch.Generator().manual_seed(heads * 10 + kv)
    for trial in range(12):
        scores = torch.rand(heads, generator=g).tolist()
        budget = int(torch.randint(1, heads + 1, (1,), generator=g))
        keep = gqa_keep(scores, kv, budget)
        group = heads // kv
        per = [sum(1 for q in keep.q if q // group == j) for j in keep.kv]
        assert 0 < len(keep.q) <= budget and set(per) == {keep.per_group}
        assert sorted({q // group for q in keep.q}) == list(keep.kv)
        assert sum(scores[q] for q in keep.q) == pytest.approx(_brute(scores, kv, budget))


def test_gqa_keep_edge_cases():
    assert gqa_keep([1.0, 2.0, 3.0, 4.0], 2, 0).q == ()
    assert gqa_keep([1.0, 2.0, 3.0, 4.0], 2, 4).q == (0, 1, 2, 3)
    assert gqa_keep([5.0, 0.0, 0.0, 0.0, 0.0, 4.0], 2, 1).q == (0,)  # best single head
    with pytest.raises(ValueError, match="multiple"):
        gqa_keep([1.0] * 5, 2, 3)


def test_realise_removes_groups_and_equal_numbers_inside_groups():
    # 6 heads, 2 kv heads (groups 0-2, 3-5): group 1 fully removable, group 0 two of three
    assert realise([0, 2, 3, 4, 5], 6, 2) == ([0, 2, 3, 4, 5], [1], [])
    # groups 0 and 1 both kept: the fewest removable in a kept group (1) goes from each
    assert realise([0, 1, 5], 6, 2) == ([0, 5], [], [1])
    assert realise([], 6, 2) == ([], [], [])


def _zero_heads(model, fam, gone):
    with torch.no_grad():
        idx = torch.as_tensor(indices(fam.out, sorted(gone), fam.head_dim))
        tensor(model, fam.out.weight_name).index_fill_(fam.out.axis, idx, 0.0)


def _inputs(vocab, seed=0):
    ids = torch.randint(3, vocab, (2, 9), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("build", [llama_gqa_lm, qwen3_lm])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_gqa_valid_masks_strip_exactly(build, seed):
    model = build()
    inputs = _inputs(model.config.vocab_size, seed)
    plan = analyze(model, inputs)
    g = torch.Generator().manual_seed(seed)
    keeps = {}
    for fam in plan.attention():
        budget = int(torch.randint(1, fam.num_heads, (1,), generator=g))
        keeps[fam.fqn] = keep = gqa_keep(torch.rand(fam.num_heads, generator=g).tolist(), fam.num_kv_heads, budget)
        _zero_heads(model, fam, set(range(fam.num_heads)) - set(keep.q))
    with torch.no_grad():
        ref = model(**inputs).logits
    report = strip(model, plan, inputs)
    with torch.no_grad():
        assert (model(**inputs).logits - ref).abs().max() <= 1e-5 * ref.abs().max()
    for fam in plan.attention():
        rec, keep = report.families[fam.fqn], keeps[fam.fqn]
        assert tuple(rec["kept"]) == keep.q and tuple(rec["kv_kept"]) == keep.kv and rec["gqa_kept_zero"] == []
        attn = model.get_submodule(fam.fqn)
        assert attn.num_key_value_groups == keep.per_group
        assert attn.q_proj.out_features == len(keep.q) * fam.head_dim
        assert attn.k_proj.out_features == len(keep.kv) * fam.head_dim
        shrunk = report.plan.families[fam.fqn]
        assert (shrunk.num_heads, shrunk.num_kv_heads) == (len(keep.q), len(keep.kv))


def test_unrealisable_mask_keeps_zero_heads_and_says_so():
    model = llama_gqa_lm()  # 6 q heads, 2 kv heads per layer
    inputs = _inputs(model.config.vocab_size)
    plan = analyze(model, inputs)
    fam = plan.attention()[0]
    _zero_heads(model, fam, {0, 1, 5})  # group 0 loses two, group 1 one: only one each can go
    with torch.no_grad():
        ref = model(**inputs).logits
    report = strip(model, plan, inputs)
    rec = report.families[fam.fqn]
    assert rec["kept"] == [1, 2, 3, 4] and rec["kv_kept"] == [0, 1] and rec["gqa_kept_zero"] == [1]
    assert "kept as zero heads" in rec["note"] and "[1]" in rec["note"]
    assert model.get_submodule(fam.fqn).num_key_value_groups == 2
    with torch.no_grad():
        assert (model(**inputs).logits - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_emptied_gqa_layer_keeps_one_zeroed_head():
    model = qwen3_lm()
    inputs = _inputs(model.config.vocab_size)
    plan = analyze(model, inputs)
    fam = plan.attention()[1]
    _zero_heads(model, fam, set(range(fam.num_heads)))
    with torch.no_grad():
        ref = model(**inputs).logits
    rec = strip(model, plan, inputs).families[fam.fqn]
    assert rec["placeholder"] == 0 and rec["kept"] == [0] and rec["kv_kept"] == [0]
    assert model.get_submodule(fam.fqn).num_key_value_groups == 1
    with torch.no_grad():
        assert (model(**inputs).logits - ref).abs().max() <= 1e-5 * ref.abs().max()
