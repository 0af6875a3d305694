"""When ``torch.export`` fails: trace with data-dependent branches pinned for the example inputs.

A forward that branches on tensor values (``if is_global_attn:`` after ``mask.any().item()``,
Longformer; a loop over the experts that received tokens, eager mixture-of-experts) cannot be
exported for all inputs. ``torch.export.draft_export`` traces it anyway with real-tensor propagation:
each data-dependent decision takes the value the example inputs give and becomes a runtime assertion
in the graph. That graph is exactly the forward *for inputs taking the same branches*, which is all
the matchers need (strip verifies itself on the same example inputs). ``trace_or_pin`` tries
``torch.export`` first and falls back only when it fails; the Plan records which was used, with the
source line of each pinned guard. When the fallback fails too, the error names the line of the guard
and what to do.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import traceback
from typing import Optional

import torch

from passes.analyze.channels import NodeValues
from passes.analyze.trace import TraceError, trace, traced_inputs

_TORCH = os.path.dirname(torch.__file__)


def _below_error(record) -> bool:
    return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet():
    """torch's own stderr handlers drop records below ERROR (draft_export's banners, symbolic-shape notes) and
    stdout / stderr are captured: a failed export prints its partial graph to stderr, dropped with the
    failure; after a success what was written to stderr (warnings) is passed on. The loggers keep their
    levels: draft_export builds its report from what they emit."""
    import torch.export._draft_export  # noqa: F401  (its logger and handlers exist before we filter them)
    handlers = {h for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
                and lg.name.startswith("torch") for h in lg.handlers if type(h) is logging.StreamHandler}
    for h in handlers:
        h.addFilter(_below_error)
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            yield
        sys.stderr.write(err.getvalue())
    finally:
        for h in handlers:
            h.removeFilter(_below_error)


def user_frame(exc: BaseException) -> Optional[str]:
    """``file:line (code)`` of the innermost frame outside torch in ``exc``'s traceback: the line of model
    code that made export fail (a data-dependent ``if``)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_TORCH)
              and os.path.abspath(f.filename) != os.path.abspath(__file__)
              and not f.filename.endswith(os.path.join("passes", "analyze", "trace.py"))]
    if not frames:
        return None
    f = frames[-1]
    return f"{f.filename}:{f.lineno}" + (f" ({f.line.strip()})" if f.line else "")


def _pinned_guards(ep) -> list[str]:
    """``"<expr> = <value> at file:line"`` for every decision draft_export pinned."""
    report = getattr(ep, "_report", None)  # torch's DraftExportReport (documented as ep._report)
    files = dict(getattr(report, "str_to_filename", None) or {})
    interned = getattr(getattr(torch._logging, "structured", None), "INTERN_TABLE", {})  # ids are per process
    files.update({i: name for name, i in interned.items() if i not in files})
    out = []
    for failure in getattr(report, "failures", ()):
        data = failure.data if isinstance(failure.data, dict) else {}
        stack = data.get("user_stack") or []
        where = ""
        if stack:
            frame = stack[-1]
            name = files.get(frame.get("filename"), f"file #{frame.get('filename')}")
            where = f" at {name}:{frame.get('line')}" + (f" ({frame['loc']})" if frame.get("loc") else "")
        what = data.get("expr") or failure.failure_type.name.lower()
        value = f" = {data['result']}" if "result" in data else ""
        out.append(f"{what}{value}{where}")
    return out


def _concrete_shapes(ep, args: tuple, kwargs: dict) -> None:
    """Sizes that depend on values (``nonzero``, the tokens routed to one expert) are unbacked symbols in the
    draft graph; the matchers need numbers: each such node's ``meta["val"]`` becomes a meta tensor of the
    size it had on the example inputs."""
    values = NodeValues(ep, args, kwargs)

    def symbolic(v):
        return isinstance(v, torch.Tensor) and any(not isinstance(d, int) for d in v.shape)

    def concrete(v, real):
        if isinstance(v, (list, tuple)) and isinstance(real, (list, tuple)):
            return type(v)(concrete(a, b) for a, b in zip(v, real))
        if symbolic(v) and isinstance(real, torch.Tensor):
            return torch.empty(real.shape, dtype=real.dtype, device="meta")
        return v
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        if symbolic(val) or isinstance(val, (list, tuple)) and any(symbolic(v) for v in val):
            node.meta["val"] = concrete(val, values[node])


def _draft(model: torch.nn.Module, example_inputs):
    args, kwargs = traced_inputs(model, example_inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet():
            return torch.export.draft_export(model, args, kwargs=kwargs)
    finally:
        model.train(was_training)


def _first(exc: TraceError) -> str:
    """trace()'s message without its generic advice."""
    return str(exc).split(". Pass example")[0]


def _line(exc: BaseException, limit: int) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:limit]


def trace_or_pin(model: torch.nn.Module, example_inputs) -> tuple[torch.export.ExportedProgram, str]:
    """``(program, how)``: ``torch.export`` (``how`` = ""), or draft_export with the data-dependent branches
    pinned for the example inputs (``how`` says so, with each guard); TraceError naming the guard's source
    line when both fail."""
    try:
        with _quiet():
            return trace(model, example_inputs), ""
    except TraceError as exc:
        if "are not parameters of" in str(exc):
            raise
        first, where = exc, user_frame(exc.__cause__ or exc)
    try:
        ep = _draft(model, example_inputs)
    except Exception as exc:  # draft_export raises many types; the first failure is the one to fix
        line = where or user_frame(exc) or "an unknown line"
        raise TraceError(
            f"{_first(first)}; draft_export with data-dependent branches pinned failed too ({type(exc).__name__}: "
            f"{_line(exc, 200)}); the forward stops at {line}. Make that branch static for tracing (torch.cond, "
            f"or a Python flag set before the call), or pass example inputs for which it runs without reading "
            f"tensor values") from exc
    guards = _pinned_guards(ep)
    try:
        _concrete_shapes(ep, *traced_inputs(model, example_inputs))
    except Exception as exc:  # the pinned graph does not even run the example: no Plan from it
        raise TraceError(
            f"{_first(first)}; draft_export pinned {'; '.join(guards) or 'its data-dependent branches'} but its "
            f"graph fails on the example inputs ({type(exc).__name__}: {_line(exc, 160)}). Make those branches "
            f"static for tracing (torch.cond, or a Python flag set before the call)") from exc
    why = _first(first).split(": ", 1)[-1][:200]
    return ep, (f"torch.export failed ({why}); traced with torch.export.draft_export, data-dependent branches "
                f"pinned for the example inputs ({'; '.join(guards) or 'no guard reported'}): the Plan holds for "
                f"inputs that take the same branches")
