"""torch-pruning backend: remove a family's indices through ``tp.DependencyGraph``.

The group torch-pruning propagates from the q (or FFN-up) rows is *checked* against the Plan (exactly
q/k/v rows + out columns, or up/gate rows + down columns, same indices) before ``group.prune()``;
a mismatch means torch-pruning sees a coupled tensor the Plan does not, and strip refuses rather than
guessing (``GroupMismatch``). Eligible: separate ``nn.Linear`` q/k/v/out (up/gate/down), no GQA, no
coupled per-head tensors. When torch-pruning itself cannot build the group (a module its graph does
not know), ``tp_remove`` says so and strip slices the Plan's tensors (recorded in the report;
the self-check verifies the result).
"""
from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from typing import Any, Optional

import torch
from torch import nn

from passes.analyze.families import AttentionFamily


def dependency_graph(model: nn.Module, example_inputs: Any):
    """torch-pruning traces autograd: enable grad on every parameter while it builds."""
    import torch_pruning as tp

    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "unwrapped parameters": we only prune Linear groups
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def tp_eligible(model: nn.Module, fam) -> Optional[str]:
    """None if torch-pruning can remove this family; else the reason it cannot."""
    if isinstance(fam, AttentionFamily) and fam.num_kv_heads != fam.num_heads:
        return "GQA: torch-pruning's q_proj group does not terminate (tests/test_strip.py limitation test)"
    if fam.coupled:
        return "per-head tensors outside q/k/v/out: the Plan slices them"
    if fam.shared:  # rotary / position tables: the group spans every layer, or never ends
        return "position tables shared by all heads: torch-pruning's group would span every layer"
    for sl in fam.slices:
        mod = model.get_submodule(sl.fqn)
        if type(mod) is not nn.Linear or sl.param != "weight":
            return f"{sl.weight_name} is not a plain nn.Linear weight"
        if sl.index is not None or sl.start != 0 or sl.size != mod.weight.shape[sl.axis]:
            return f"{sl.weight_name} is fused (slice {sl.describe()})"
        if sl.axis != (1 if sl.role in ("out", "down") else 0):
            return f"{sl.weight_name}: unexpected axis {sl.axis} for role {sl.role}"
    return None


GROUP_SECONDS = 30.0  # get_pruning_group can spin on some graphs (grouped-query attention, partial rotary)


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise TimeoutError after ``seconds`` (main thread only: SIGALRM; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(*_):
        raise TimeoutError(f"torch-pruning did not finish within {seconds:g} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class GroupMismatch(Exception):
    """torch-pruning's dependency group differs from the Plan (a coupling the Plan does not describe)."""


def tp_remove(dg, model: nn.Module, fam, remove: dict) -> Optional[str]:
    """Prune through the dependency graph: None on success; why not, when torch-pruning cannot build the
    group; raises :class:`GroupMismatch` when the group differs from the Plan."""
    import torch_pruning as tp
    from torch_pruning import _helpers

    root = fam.slices[0]  # q (attention) or up (feed-forward): the rows the group starts from
    expected = {}
    for sl in fam.slices:
        mod = model.get_submodule(sl.fqn)
        idx = remove.get(sl.weight_name, (sl.axis, []))[1]
        expected[id(mod)] = (sl.role not in ("out", "down"), tuple(idx))
    root_idx = remove.get(root.weight_name, (0, []))[1]
    try:
        with _time_limit(GROUP_SECONDS):
            group = dg.get_pruning_group(model.get_submodule(root.fqn), tp.prune_linear_out_channels,
                                         idxs=list(root_idx))
    except Exception as exc:  # torch-pruning's own limitation (not a coupling it found): say so
        return f"torch-pruning could not build the group ({type(exc).__name__}: {str(exc)[:120]})"
    seen = {}
    for dep, idxs in group.items:
        tgt = dep.target.module
        if isinstance(tgt, nn.Module) and any(True for _ in tgt.parameters(recurse=False)):
            plain = tuple(sorted(_helpers.to_plain_idxs(idxs)))
            seen[id(tgt)] = (bool(dg.is_out_channel_pruning_fn(dep.handler)), plain)
    if seen != expected:
        names = {id(m): n for n, m in model.named_modules()}
        show = lambda d: {names.get(k, k): ("out" if v[0] else "in", len(v[1])) for k, v in d.items()}
        raise GroupMismatch(f"dependency group {show(seen)} != plan {show(expected)}")
    group.prune()
    return None
