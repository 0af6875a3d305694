"""``analyze``: trace a model and collect its attention and feed-forward families into a ``Plan``.

LEAP prunes *groups* of weights (heads, FFN neurons; paper Sec. 3, Eq. 1-2): a head is the
``head_dim`` rows of q, k, v and the matching columns of the out projection; a neuron is one row
of up (and gate) and one column of down. The matchers live beside this file: ``attention.py``
(sdpa or matmul-softmax-matmul) and ``ffn.py`` (up -> activation -> down, gated or not).
"""
from __future__ import annotations

from typing import Optional

import torch

from passes.analyze.activations import ACTIVATIONS
from passes.analyze.attention import match_attention, sites
from passes.analyze.ffn import match_ffn
from passes.analyze.inputs import split_inputs
from passes.analyze.plan import Plan
from passes.analyze.residual import find_residual
from passes.analyze.trace import Graph, TraceError, trace

_MATCH_ERRORS = (RuntimeError, TypeError, IndexError, KeyError, ValueError)


class AnalyzeError(ValueError):
    """The model could not be traced, or no attention / feed-forward family was found."""


def _block(fqn: str) -> Optional[str]:
    """The innermost numbered container item (``encoder.layer.3``) holding ``fqn``."""
    parts = fqn.split(".")
    return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if parts[i - 1].isdigit()), None)


def _assign_layers(found: list[tuple[int, object]]) -> None:
    """``layer`` = ordinal of the block in forward order (per kind when blocks are unnumbered)."""
    found.sort(key=lambda t: t[0])
    blocks = [_block(f.fqn) for _, f in found]
    if all(b is not None for b in blocks):
        order = list(dict.fromkeys(blocks))
        for (_, f), b in zip(found, blocks):
            f.layer = order.index(b)
        return
    seen: dict[str, int] = {}
    for _, f in found:
        f.layer = seen[f.kind] = seen.get(f.kind, -1) + 1


def analyze(model: torch.nn.Module, example_inputs, residual: bool = False) -> Plan:
    """Trace ``model`` on ``example_inputs`` and return its attention / feed-forward families.

    ``residual=True`` also finds the residual stream (``Plan.residual``, ``residual.py``: what pruning
    hidden dimensions touches) and raises ``AnalyzeError`` if the stream cannot be removed from."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"analyze() needs a torch.nn.Module, got {type(model).__name__}")
    split_inputs(example_inputs)  # TypeError for unsupported input forms
    try:
        g = Graph(trace(model, example_inputs))
    except TraceError as exc:
        raise AnalyzeError(str(exc)) from exc
    found, reasons, used = [], [], set()
    for site in sites(g):
        try:
            fam, why = match_attention(g, site)
        except _MATCH_ERRORS as exc:  # an unusual graph near this site: report it, keep going
            fam, why = None, f"{site[0].name}: {type(exc).__name__}: {exc}"
        if fam is None:
            reasons.append(why)
            continue
        found.append((g.order[site[0]], fam))
        used.update(s.weight_name for s in fam.slices)
    for down in g.projections():
        try:
            fam = None if down.weight in used else match_ffn(g, down)
        except _MATCH_ERRORS:
            fam = None
        if fam is not None and not used.intersection(s.weight_name for s in fam.slices):
            found.append((g.order[down.node], fam))
    if not found:
        detail = "; ".join(dict.fromkeys(reasons)) or "no attention op (sdpa or matmul-softmax-matmul)"
        raise AnalyzeError(
            f"no attention or feed-forward family found in {type(model).__name__}: the model has no "
            f"Linear -> reshape(heads, head_dim) -> attention -> Linear pattern and no Linear -> "
            f"activation ({', '.join(ACTIVATIONS)}) -> Linear back to the input width ({detail}). "
            f"Check that the forward runs the transformer blocks for these example inputs.")
    _assign_layers(found)
    plan = Plan(model_class=type(model).__name__)
    for _, fam in found:
        key = fam.fqn if fam.fqn not in plan.families else f"{fam.fqn}:{fam.kind}"
        if key in plan.families and plan.families[key] == fam:
            continue  # the same weights run twice (shared layers): one family
        plan.families[key] = fam
    if residual:
        plan.residual, why = find_residual(model, g, plan)
        if plan.residual is None:
            raise AnalyzeError(f"{type(model).__name__}: hidden dimensions cannot be removed ({why}); prune "
                               f"heads / neurons only (e.g. CoFi with prune_hidden=False)")
    return plan
