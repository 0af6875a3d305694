"""Property: strip is exact for random tiny BERT shapes and random head / neuron masks.

Every example draws layers, heads, head_dim, FFN width, per-head and per-neuron mask kinds
(zero out-columns, zero v-rows with a live v-bias, zero q/k only, everything, nothing; zero up
rows, down columns, up rows + bias), whole layers emptied, padding in the attention mask, and
the removal backend. The Plan is traced once per structure (``analyze`` is cached by shape).
"""
import pytest
import functools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passes.analyze import analyze
from passes.strip import strip
from tests.passes.builders import (
    HEAD_KINDS,
    NEURON_KINDS,
    mask_heads,
    mask_neurons,
    randomize_biases,
)


def _bert(layers, heads, head_dim, ffn, seed):
    from transformers import BertConfig, BertModel
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=heads * head_dim, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=16,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2)
    return BertModel(cfg, add_pooling_layer=False).eval()


def _inputs(seed, pad):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (2, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6 - pad:] = 0  # padded keys: softmax rows still sum to 1 over the rest
    return {"input_ids": ids, "attention_mask": mask}


@functools.lru_cache(maxsize=None)
def _plan(layers, heads, head_dim, ffn):
    return analyze(_bert(layers, heads, head_dim, ffn, 0), _inputs(0, 0))


@st.composite
def cases(draw):
    layers = draw(st.integers(1, 2))
    heads = draw(st.sampled_from([1, 2, 4]))
    head_dim = draw(st.sampled_from([2, 4, 8]))
    ffn = draw(st.sampled_from([1, 3, 8, 16]))
    empty = draw(st.lists(st.sampled_from(["none", "heads", "neurons", "both"]),
                          min_size=layers, max_size=layers))
    head_kinds = [draw(st.lists(st.sampled_from(HEAD_KINDS), min_size=heads, max_size=heads))
                  for _ in range(layers)]
    neuron_kinds = [draw(st.lists(st.sampled_from(NEURON_KINDS[:2] + NEURON_KINDS[3:]),
                                  min_size=ffn, max_size=ffn)) for _ in range(layers)]
    return dict(layers=layers, heads=heads, head_dim=head_dim, ffn=ffn, empty=empty,
                head_kinds=head_kinds, neuron_kinds=neuron_kinds, seed=draw(st.integers(0, 10**6)),
                pad=draw(st.integers(0, 4)), backend=draw(st.sampled_from(["slice", "torch_pruning"])))


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_strip_is_exact(case):
    model = _bert(case["layers"], case["heads"], case["head_dim"], case["ffn"], case["seed"] % 97)
    inputs = _inputs(case["seed"], case["pad"])
    plan = _plan(case["layers"], case["heads"], case["head_dim"], case["ffn"])
    randomize_biases(model, case["seed"])
    applied = {}
    for fam in plan.families.values():
        empty = case["empty"][fam.layer]
        if fam.kind == "attention":
            kinds = ["v" if h % 2 else "out" for h in range(fam.granules)] \
                if empty in ("heads", "both") else case["head_kinds"][fam.layer]
            mask_heads(model, fam, kinds)
        else:
            kinds = ["up" if j % 2 else "down" for j in range(fam.granules)] \
                if empty in ("neurons", "both") else case["neuron_kinds"][fam.layer]
            mask_neurons(model, fam, kinds)
        applied[fam.fqn] = kinds
    n_before = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state
    summary = strip(model, plan, inputs, backend=case["backend"])
    with torch.no_grad():
        got = model(**inputs).last_hidden_state
    assert (got - ref).abs().max().item() <= 1e-5
    shrinks = False
    for fqn, rec in summary.families.items():
        kinds = applied[fqn]
        dead = [g for g, k in enumerate(kinds) if k not in ("keep", "qk")]
        assert 1 <= len(rec["kept"]) <= rec["before"]  # never 0 wide
        assert set(rec["kept"]) == (set(range(len(kinds))) - set(dead) or {0})  # exactly the dead go
        shrinks |= len(rec["kept"]) < rec["before"]
    n_after = sum(p.numel() for p in model.parameters())
    assert n_after < n_before if shrinks else n_after == n_before
