"""Issue 25, class 8: every miss is loud. Each layout of classes 3-6 with the matcher for it switched off:
the sites it would have matched are listed in ``Plan.unmatched`` with a reason (``strict`` refuses; the
CLI prints them: tests/test_cli_analyze.py), never dropped in silence; class 5 without its fallback names
the guard's line (tests/test_layouts_pinned.py).
"""
import importlib

import pytest

from passes.analyze import AnalyzeError, analyze, channels, ffn_open, scores
from tests import models_attn as M


def _misses(name, kinds=("attention",)):
    """``(Plan or None when nothing at all was found, {kind: unmatched sites})``; strict must refuse."""
    model, inputs = M.ALL[name]()
    try:
        plan = analyze(model, inputs)
        unmatched = plan.unmatched
        with pytest.raises(AnalyzeError, match="strict=True"):
            analyze(model, inputs, strict=True)
    except AnalyzeError as exc:  # no family left: the error lists the sites instead
        assert "no attention or feed-forward family" in str(exc)
        plan, unmatched = None, exc.unmatched
    return plan, {k: [u for u in unmatched if u.kind == k] for k in kinds}


def test_latent_attention_without_filled_buffers(monkeypatch):
    monkeypatch.setattr(channels, "FILL_OPS", frozenset())
    plan, miss = _misses("deepseek_v3")
    assert not plan.attention() and len(miss["attention"]) == 2
    assert all("new_empty" in u.reason and u.module.endswith("self_attn") for u in miss["attention"])


def test_einsum_scores_without_the_einsum_reader(monkeypatch):
    monkeypatch.setattr(scores, "_einsum", lambda node, qk: [])
    plan, miss = _misses("einsum_relative")
    assert not plan.attention() and len(miss["attention"]) == 2
    assert all("not traced back to a q.k product" in u.reason for u in miss["attention"])
    assert len(plan.feed_forward()) == 2


def test_transient_global_einsum_without_the_einsum_reader(monkeypatch):
    monkeypatch.setattr(scores, "_einsum", lambda node, qk: [])
    plan, miss = _misses("longt5_tglobal")
    assert not plan.attention() and len(miss["attention"]) == 2


def test_sinks_without_following_cat(monkeypatch):
    monkeypatch.setattr(scores, "JOIN_OPS", frozenset())
    plan, miss = _misses("sink_attention")
    assert not plan.attention() and len(miss["attention"]) == 2
    assert all("cat" in u.reason and "scores were not traced" in u.reason for u in miss["attention"])


def test_levit_without_batch_norm_or_open_activations(monkeypatch):
    monkeypatch.setattr(channels, "BATCH_NORM_OPS", frozenset())
    monkeypatch.setattr(ffn_open, "BATCH_NORM_OPS", frozenset())
    plan, miss = _misses("levit", ("attention", "ffn"))
    assert plan is None and (len(miss["attention"]), len(miss["ffn"])) == (5, 5)
    assert all("batch_norm" in u.reason for u in miss["ffn"])


def test_levit_mlps_without_the_open_matcher(monkeypatch):
    monkeypatch.setattr(importlib.import_module("passes.analyze.match"), "match_open_ffn",
                        lambda g, down, values: (None, "switched off"))
    plan, miss = _misses("levit", ("ffn",))
    assert len(plan.attention()) == 5 and not plan.feed_forward() and len(miss["ffn"]) == 5
    assert all("switched off" in u.reason for u in miss["ffn"])
