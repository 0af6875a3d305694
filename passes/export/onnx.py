"""export_onnx: one ONNX file with the dynamic axes the model allows, verified in onnxruntime.

The exported output is the model's *first* output: a tensor as is, ``tuple[0]``, or the first
field of an HF ``ModelOutput`` (``logits`` for heads, ``last_hidden_state`` for bare encoders).
Example inputs: a dict (passed as keyword arguments, ONNX input names = the keys), a tuple
(positional, names ``input_0``...) or one tensor.

Dynamic axes: ``dynamic_axes=`` if given, else what ``torch.export`` keeps symbolic
(``axes.py``: audio features ``[batch, mel, frames]`` keep ``mel`` fixed, an encoder-decoder gets
two sequence axes). That trace also refuses a forward with data-dependent Python control flow
(:class:`axes.ControlFlowError`), whose ONNX would be wrong on the branch the example did not take
(``allow_control_flow=True``: warn loudly and export anyway).

Export paths (``fallback.py``): TorchScript; TorchScript with an all-ones ``attention_mask`` when
the forward accepts one and the example lacks it; the dynamo exporter (onnxscript). Each path is
written to a temporary file, loaded in onnxruntime (CPUExecutionProvider) and compared with
PyTorch on several shapes (``shapes``: ``(batch, seq)``, seq an int, a factor of the example's
size, or None for the example's); the first that passes is renamed to ``path`` and
``ExportReport.path_taken`` / ``attempts`` record what happened. ``exporter="torchscript"`` or
``"dynamo"`` restricts the paths.

Nothing unverified is ever at ``path``, and a failed export never deletes what is there: an
earlier (verified) file at ``path`` is left as it was, the last failing file is kept as
``<stem>.failed.onnx`` (tagged ``written_by = leap-fx``: a ``.failed.onnx`` / ``.opt.onnx`` without the
tag is the user's, so the export is refused rather than write over it, and a stale one is left) and the error (``ParityError`` when a file was written but failed the
check, naming which side failed; ``ExportError`` when no exporter could write one) lists every
path tried. ``optimize=True`` (or ``"ort"``) additionally writes ``<stem>.opt.onnx``:
onnxruntime's extended graph optimizations; ``optimize="transformers"`` uses
``onnxruntime.transformers``' BERT fusions. Either is kept only if it passes the same parity
check; a rejected optimization is reported in ``notes``, the plain export stays valid.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence, Union

from torch import nn

from passes.export.axes import ControlFlowError, infer_axes
from passes.export.fallback import ExportError, attempts, run_exporter
from passes.export.inputs import InputSpec
from passes.export.metadata import mark_written, refuse_theirs, written_here
from passes.export.parity import ParityError, first_tensor, ort_session, parity
from passes.hf_experts import batched_experts, experts_implementation
from passes.io import atomic_path, check_file_target
from passes.strip.mha import SlimMultiheadAttention

EXPORTERS = ("auto", "torchscript", "dynamo")
OPTIMIZERS = ("ort", "transformers")
DEFAULT_SHAPES = ((1, 0.6), (3, 1.4), (2, None))  # (batch, seq factor of the example; None: as is)
__all__ = ["EXPORTERS", "ExportReport", "ExportError", "ControlFlowError", "export_onnx"]


@dataclass
class ExportReport:
    path: str
    exporter: str
    opset: Optional[int]
    size_bytes: int
    input_names: list[str]
    output_name: str
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # "BxS" ("Bx-": no seq axis)
    optimized_path: Optional[str] = None
    optimized_max_abs_diff: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    path_taken: str = ""                                       # the export path that passed
    attempts: list[str] = field(default_factory=list)          # every path tried, with its outcome
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class _FirstOutput(nn.Module):
    """Positional-tensor wrapper: ``model(**dict(zip(names, tensors)))`` -> first tensor."""

    def __init__(self, model: nn.Module, names: Sequence[str], as_kwargs: bool):
        super().__init__()
        self.model, self.names, self.as_kwargs = model, list(names), as_kwargs

    def forward(self, *tensors):
        out = self.model(**dict(zip(self.names, tensors))) if self.as_kwargs else self.model(*tensors)
        return first_tensor(out)


def _check_args(path, atol, exporter, optimize) -> str:
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if optimize not in (False, True) + OPTIMIZERS:
        raise ValueError(f"optimize must be False, True (= 'ort') or one of {OPTIMIZERS}")
    if not str(path).endswith(".onnx"):
        raise ValueError(f"path must end with .onnx, got {path!r}")
    path = check_file_target(path, "export_onnx: path")
    sides = [path[: -len(".onnx")] + ".failed.onnx"] + ([path[: -len(".onnx")] + ".opt.onnx"] if optimize else [])
    refuse_theirs("export_onnx", sides)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not math.isfinite(atol) or atol < 0:
        raise ValueError(f"atol must be a finite number >= 0 (the largest |onnxruntime - PyTorch| "
                         f"allowed, e.g. 1e-4), got {atol!r}")
    return path


def _axes(model: nn.Module, spec: InputSpec, notes: list[str], allow_control_flow: bool):
    """Inferred axes (None: keep the guess), refusing data-dependent control flow unless allowed. The
    probe runs on a copy: a forward traced with symbolic sizes may store them on modules (Swin does)."""
    try:
        probe = _FirstOutput(_exportable(model, []), spec.names, spec.as_kwargs).eval()
        with batched_experts(probe.model):  # the eager experts loop is data-dependent; batched_mm is what exports
            return infer_axes(probe, spec.names, spec.tensors)
    except ControlFlowError as exc:
        if not allow_control_flow:
            raise
        warnings.warn(f"export_onnx: {exc}", RuntimeWarning, stacklevel=3)
        notes.append(f"WARNING: {exc}")
    except Exception as exc:  # torch.export cannot trace it: guess the axes, parity will tell
        notes.append(f"dynamic axes guessed (batch = axis 0, sequence = axis 1 of rank-2/3 inputs): torch.export "
                     f"failed ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]})")
    return None


def export_onnx(model: nn.Module, example_inputs: Any, path: str, *, opset: Optional[int] = None,
                check: bool = True, atol: float = 1e-4, optimize: Union[bool, str] = False,
                exporter: str = "auto", shapes=None, dynamic_axes: Optional[dict[str, dict[int, str]]] = None,
                allow_control_flow: bool = False, output_name: str = "output",
                output_axes: Optional[dict[int, str]] = None) -> ExportReport:
    """Export ``model`` to ``path`` (single file) and check onnxruntime parity; see module doc.
    ``output_name`` / ``output_axes`` name the output and its dynamic axes (default: ``output`` with the
    inferred axes; a classifier's ``logits`` are ``{0: "batch"}``)."""
    path = _check_args(path, atol, exporter, optimize)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    guess = InputSpec.from_example(example_inputs, dynamic_axes)
    model = model.eval()
    notes: list[str] = []
    inferred = None if dynamic_axes is not None else _axes(model, guess, notes, allow_control_flow)
    spec = InputSpec.from_example(example_inputs, dynamic_axes, inferred)
    failed = path[: -len(".onnx")] + ".failed.onnx"
    tried, errors = [], []
    for att in attempts(model, spec, exporter):
        if att.fixed and (dynamic_axes is not None or not any(isinstance(e, ParityError) for e in errors)):
            continue  # the caller's axes are never changed behind their back
        kept, dropped = [], []
        try:
            base = _exportable(model, notes if not tried else [])  # a fresh copy per path (traces mutate)
            with batched_experts(base) if att.experts else contextlib.nullcontext():
                report = _attempt(model, base, att, path, failed, opset, check, atol, shapes or DEFAULT_SHAPES,
                                  kept, (output_name, output_axes), dropped)
        except (ExportError, ParityError) as exc:
            tried.append(f"{att.name}: {exc}")
            errors.append(exc)
            continue
        if os.path.exists(failed) and errors:
            os.remove(failed)  # an earlier path's failure, superseded by this verified file
        harmless = [f"{len(dropped)} known-harmless export warning(s) not shown (passes/export/fallback.py "
                    f"HARMLESS), parity verified"] if dropped else []
        swapped = [f"experts exported with experts_implementation={att.experts!r} (same function; the model's own "
                   f"{experts_implementation(model)!r} has no ONNX export); the model's setting is unchanged"] \
            if att.experts else []
        report.notes = notes + swapped + [f"warning kept visible: {k}" for k in kept] + harmless + report.notes
        report.attempts, report.path_taken = tried + [f"{att.name}: passed"], att.name
        return _finish(model, report, path, optimize, atol, shapes or DEFAULT_SHAPES, att.spec)
    raise _failure(model, path, tried, errors)


def _attempt(model, base, att, path: str, failed: str, opset, check: bool, atol: float, shapes, kept,
             output=("output", None), dropped: Optional[list] = None) -> ExportReport:
    """One export path into a temporary file, verified, renamed to ``path`` only if it passes."""
    wrapper = _FirstOutput(base, att.spec.names, att.spec.as_kwargs).eval()
    with atomic_path(path, suffix=".tmp.onnx") as tmp:
        used = run_exporter(wrapper, att, tmp, opset, kept, *output, dropped=dropped)
        report = ExportReport(path=path, exporter=att.exporter, opset=used, size_bytes=0,
                              input_names=list(att.spec.names), output_name=output[0],
                              dynamic_axes=att.spec.dynamic_axes)
        if check:
            try:
                report.max_abs_diff = parity(model, att.spec, ort_session(tmp), shapes)
            except ParityError:
                _keep_failed(tmp, failed)
                raise
            except Exception as exc:  # onnxruntime cannot even load it
                _keep_failed(tmp, failed)
                raise ParityError(f"onnxruntime failed to load the export ({type(exc).__name__}: "
                                  f"{(str(exc).strip().splitlines() or [''])[0][:300]})", float("inf"),
                                  failed, side="onnxruntime") from exc
            worst = max(report.max_abs_diff.values())
            if not worst <= atol:
                _keep_failed(tmp, failed)
                raise ParityError(f"onnxruntime differs from PyTorch by {worst:.3g} > atol {atol:g} "
                                  f"({report.max_abs_diff})", worst, failed)
    return report


def _keep_failed(tmp: str, failed: str) -> None:
    mark_written(tmp)
    os.replace(tmp, failed)


def _failure(model, path: str, tried: list[str], errors: list) -> Exception:
    parity_errors = [e for e in errors if isinstance(e, ParityError)]
    kept = "the file there from before was left unchanged" if os.path.exists(path) else "nothing was written there"
    failed = path[: -len(".onnx")] + ".failed.onnx"
    where = f"; the last failing export is kept for inspection as {failed}" if os.path.exists(failed) else ""
    text = (f"export_onnx of {type(model).__name__} failed on every path ({'; '.join(tried)}). NOT written to "
            f"{path} ({kept}){where}")
    if parity_errors:
        worst = max(e.max_abs_diff for e in parity_errors)
        return ParityError(text, worst, failed if os.path.exists(failed) else None, parity_errors[-1].side)
    return ExportError(text)


def _finish(model, report: ExportReport, path: str, optimize, atol: float, shapes, spec) -> ExportReport:
    report.size_bytes = os.path.getsize(path)
    if not report.max_abs_diff:
        report.notes.append("parity NOT checked (check=False)")
    if optimize:
        _optimize(model, spec, path, shapes, atol, report, "ort" if optimize is True else optimize)
    else:
        stale = path[: -len(".onnx")] + ".opt.onnx"  # optimized from the file just replaced
        if os.path.lexists(stale) and not written_here(stale):
            report.notes.append(f"{stale} was left as it is (not written by leap-fx; it is not this export)")
        else:
            _remove(stale)
    return report


def _exportable(model: nn.Module, notes: list[str]) -> nn.Module:
    """The copy the exporters trace (a traced forward may store traced sizes on modules: Swin sets its
    window size; the caller's model stays as it was), with nn.MultiheadAttention swapped for
    SlimMultiheadAttention (same math): the TorchScript trace of nn.MultiheadAttention bakes
    ``batch * num_heads`` into a Reshape."""

    clone = copy.deepcopy(model)
    names = [n for n, m in model.named_modules() if type(m) is nn.MultiheadAttention]
    if not names:
        return clone
    for name in names:
        parent, _, attr = name.rpartition(".")
        try:
            slim = SlimMultiheadAttention.from_mha(clone.get_submodule(name))
        except ValueError as exc:
            notes.append(f"{name}: kept nn.MultiheadAttention ({exc})")
            continue
        setattr(clone.get_submodule(parent) if parent else clone, attr, slim)
    notes.append(f"exported {len(names)} nn.MultiheadAttention as SlimMultiheadAttention (same math)")
    return clone


def _remove(*paths: str) -> None:
    for p in paths:
        if os.path.exists(p):
            os.remove(p)


def _optimize(model, spec, path: str, shapes, atol: float, report: ExportReport, how: str) -> None:
    opt = path[: -len(".onnx")] + ".opt.onnx"
    try:
        with atomic_path(opt, suffix=".tmp.onnx") as tmp:
            if how == "ort":
                ort_session(path, optimize_to=tmp)  # ORT writes the optimized graph while loading
            else:  # onnxruntime.transformers fusions; num_heads=0: detect per graph (never assumed)
                from onnxruntime.transformers import optimizer
                optimizer.optimize_model(path, model_type="bert", num_heads=0, hidden_size=0,
                                         opt_level=0).save_model_to_file(tmp)
            diffs = parity(model, spec, ort_session(tmp), shapes)
            if not max(diffs.values()) <= atol:
                raise ParityError(f"optimized graph rejected: parity {max(diffs.values()):.3g} > {atol:g}",
                                  max(diffs.values()))
            mark_written(tmp)
        report.optimized_path, report.optimized_max_abs_diff = opt, diffs
    except Exception as exc:  # an optimizer failure never spoils the verified export
        _remove(opt)  # checked as ours (or absent) by _check_args before anything was written
        report.notes.append(str(exc) if isinstance(exc, ParityError) else
                            f"optimization failed: {type(exc).__name__}: {exc}")
