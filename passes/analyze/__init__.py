"""Stage 1, analyze: trace a model (``torch.export``) and find its attention / FFN families.

``trace.py`` (export + aten graph helpers) -> ``channels.py`` (channels followed through the ops,
node values) -> ``attention.py`` / ``ffn.py`` (dataflow matchers) -> ``side_tensors.py`` /
``path_sides.py`` (per-head tensors outside q/k/v/out: coupled, shared or frozen) -> ``analyze.py``
(one family per module, ties, unmatched sites) -> ``plan.py`` (the Plan: JSON round trip, table);
``residual.py`` (``analyze(..., residual=True)``: the residual stream, what hidden-dimension pruning
touches).
"""
from passes.analyze.activations import ACTIVATIONS, activation
from passes.analyze.analyze import AnalyzeError, analyze
from passes.analyze.plan import (
                                 ATTENTION,
                                 FEED_FORWARD,
                                 RESIDUAL,
                                 AttentionFamily,
                                 Family,
                                 FeedForwardFamily,
                                 Plan,
                                 ResidualFamily,
                                 Slice,
                                 common_prefix,
)
from passes.analyze.trace import TraceError

__all__ = ["ACTIVATIONS", "activation", "AnalyzeError", "analyze", "ATTENTION", "FEED_FORWARD", "RESIDUAL",
           "AttentionFamily", "FeedForwardFamily", "Family", "Plan", "ResidualFamily", "Slice", "common_prefix",
           "TraceError"]
