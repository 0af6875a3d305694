"""Issue 25, class 5: forwards that branch on tensor values (``if is_global:`` after ``.item()``).

torch.export refuses them; analyze falls back to torch.export.draft_export with the branches pinned for
the example inputs, only then, and records it (``Plan.trace``, with the guard's source line). When the
fallback fails too, the error names the guard's line and what to do.
"""
import inspect

import pytest
import torch
import torch.nn as nn

from leap_fx.run.roundtrip import roundtrip
from passes.analyze import AnalyzeError, Plan, analyze, pinned
from tests import models_attn as M
from tests.models_attn import check_structure


def _guard_line() -> int:
    lines, start = inspect.getsourcelines(M.GuardedBlock.forward)
    return start + next(i for i, line in enumerate(lines) if "if is_global:" in line)


def test_export_failure_falls_back_to_pinned_branches_and_says_so():
    model, inputs = M.guarded()
    plan = analyze(model, inputs, strict=True)
    check_structure(plan, "guarded")
    assert "draft_export" in plan.trace and "pinned for the example inputs" in plan.trace
    assert f"models_attn.py:{_guard_line()} (if is_global:)" in plan.trace
    assert "NOTE: torch.export failed" in plan.table() and Plan.from_json(plan.to_json()).trace == plan.trace


def test_exportable_models_are_not_traced_by_the_fallback(monkeypatch):
    def refuse(*_):
        raise AssertionError("draft_export must not run when torch.export works")
    monkeypatch.setattr(pinned, "_draft", refuse)
    model, inputs = M.sink_attention()
    assert analyze(model, inputs).trace == ""


@pytest.mark.slow
def test_round_trip_with_the_branch_pinned(tmp_path):
    """The ONNX graph holds the example's branch too: the caller says the branch cannot change
    (allow_control_flow), parity is checked on inputs taking the same branch (the mask is tiled)."""
    model, inputs = M.guarded()
    rt = roundtrip(model, inputs, str(tmp_path), seed=1, slim=lambda: M.guarded()[0], allow_control_flow=True)
    assert rt.status == "PASS", f"{rt.stage}: {rt.reason}"
    assert (rt.families["attention"], rt.families["ffn"]) == (2, 2) and rt.params[1] < rt.params[0]
    assert len(rt.parity) >= 2 and max(rt.parity.values()) <= 1e-4 and rt.slim <= 1e-5


def test_without_the_fallback_the_error_names_the_guard(monkeypatch):
    def broken(*_):
        raise RuntimeError("draft_export: unsupported")
    monkeypatch.setattr(pinned, "_draft", broken)
    model, inputs = M.guarded()
    with pytest.raises(AnalyzeError, match=rf"torch.export failed on Guarded: .*draft_export .*failed too .*"
                                           rf"stops at .*models_attn.py:{_guard_line()} \(if is_global:\).*static"):
        analyze(model, inputs)


class _BadPin(nn.Module):
    """A branch on a value (``x.sum() > 0``) guarding the MLP: traced with the branch the example takes."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x):
        if x.sum() > 0:
            return x + self.down(torch.relu(self.up(x)))
        return x


def test_pinned_branch_is_the_one_the_example_takes():
    plan = analyze(_BadPin(), torch.ones(2, 4))
    assert len(plan.feed_forward()) == 1 and "_BadPin" not in plan.trace and "x.sum() > 0" in plan.trace
    with pytest.raises(AnalyzeError, match="no attention or feed-forward family"):
        analyze(_BadPin(), -torch.ones(2, 4))  # the other branch: no MLP runs


def test_longformer_is_traced_pinned_and_its_chunked_attention_reported():
    """Longformer branches on ``is_global_attn`` and builds its sliding-window scores with strided chunks
    the walks do not follow: traced with the branch pinned, its FFNs found, each attention site listed."""
    from transformers import LongformerConfig
    cfg = LongformerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, attention_window=4, max_position_embeddings=80, pad_token_id=1,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model, inputs = M._hf("LongformerModel", cfg), M._ids(51)
    inputs["input_ids"] = inputs["input_ids"].clamp(min=3)
    plan = analyze(model, inputs)
    assert "modeling_longformer.py" in plan.trace and "if is_global_attn" in plan.trace
    assert len(plan.feed_forward()) == 2 and not plan.attention()
    sites = [u for u in plan.unmatched if u.kind == "attention"]
    assert len(sites) == 2 and all("the attention walks do not follow" in u.reason for u in sites)
