"""Stage 1, analyze: trace a model (``torch.export``) and find its attention / FFN families.

``trace.py`` (export + aten graph helpers; ``pinned.py``: draft_export with data-dependent branches
pinned, only when export fails) -> ``channels.py`` (channels followed through the ops, node values;
``assembled.py``: buffers filled in parts) -> ``scores.py`` (q.k and probs.v products: matmul, einsum,
sink columns) + ``head_axes.py`` (per-head channels along a layout) -> ``attention.py`` / ``ffn.py`` /
``ffn_open.py`` / ``experts.py`` (dataflow matchers; ``expert_graph.py`` reads fused experts and
routers) -> ``side_tensors.py`` / ``path_sides.py`` (per-head tensors outside q/k/v/out: coupled,
shared or frozen) -> ``match.py`` (one family per module, ties, unmatched sites) -> ``families.py`` (each
family's geometry and declared fields) -> ``plan.py`` (the
Plan: JSON round trip, table); ``residual.py`` (``analyze(..., residual=True)``: the residual stream,
what hidden-dimension pruning touches).
"""
from passes.analyze.activations import ACTIVATIONS, activation
from passes.analyze.match import AnalyzeError, analyze
from passes.analyze.plan import (
                                 ATTENTION,
                                 EXPERTS,
                                 FEED_FORWARD,
                                 RESIDUAL,
                                 AttentionFamily,
                                 ExpertsFamily,
                                 Family,
                                 FeedForwardFamily,
                                 Plan,
                                 ResidualFamily,
                                 Slice,
                                 common_prefix,
)
from passes.analyze.trace import TraceError

__all__ = ["ACTIVATIONS", "activation", "AnalyzeError", "analyze", "ATTENTION", "EXPERTS", "FEED_FORWARD", "RESIDUAL",
           "AttentionFamily", "ExpertsFamily", "FeedForwardFamily", "Family", "Plan", "ResidualFamily", "Slice",
           "common_prefix", "TraceError"]
