"""export_onnx: one ONNX file with dynamic batch / sequence axes, verified in onnxruntime.

The exported output is the model's *first* output: a tensor as is, ``tuple[0]``, or the first
field of an HF ``ModelOutput`` (``logits`` for heads, ``last_hidden_state`` for bare encoders).
Example inputs: a dict (passed as keyword arguments, ONNX input names = the keys), a tuple
(positional, names ``input_0``...) or one tensor.

Default exporter: the TorchScript one (``torch.onnx.export(..., dynamo=False)``): it exports
every tiny architecture here and its graphs ran 15-20% faster in onnxruntime than the dynamo
exporter's. ``exporter="dynamo"`` selects ``torch.export``-based export (needs onnxscript).

Nothing unverified is left at ``path``: the file is written to a temporary name, loaded in
onnxruntime (CPUExecutionProvider) and compared with PyTorch on several (batch, sequence)
shapes; only then is it renamed to ``path``. On a mismatch it is renamed to
``<stem>.failed.onnx``, an older ``path`` / ``<stem>.opt.onnx`` is deleted (it would pass for
this export's result) and :class:`ParityError` is raised. ``optimize=True`` (or ``"ort"``)
additionally writes ``<stem>.opt.onnx``: onnxruntime's extended graph optimizations (fused
Gemm/Gelu/LayerNorm kernels, CPU provider); ``optimize="transformers"`` uses
``onnxruntime.transformers``' BERT fusions instead. Either is kept only if it passes the same
parity check (ORT's Attention fuser stamps one num_heads on every layer, which is wrong after
per-layer head pruning); a rejected optimization is reported in ``notes``, the plain export
stays valid. ``opset``: default 17 (torchscript) / the exporter's default (dynamo).
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from passes.export.inputs import InputSpec
from passes.io import atomic_path
from passes.export.parity import ParityError, first_tensor, ort_session, parity

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_SHAPES = ((1, 5), (3, 11), (2, None))  # None: the example's own sequence length


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


def export_onnx(model: nn.Module, example_inputs: Any, path: str, *, opset: Optional[int] = None,
                check: bool = True, atol: float = 1e-4, optimize: Union[bool, str] = False,
                exporter: str = "torchscript", shapes=DEFAULT_SHAPES,
                dynamic_axes: Optional[dict[str, dict[int, str]]] = None, output_name: str = "output",
                output_axes: Optional[dict[int, str]] = None) -> ExportReport:
    """Export ``model`` to ``path`` (single file) and check onnxruntime parity; see module doc.
    ``output_name`` / ``output_axes`` name the output and its dynamic axes (default: ``output``, the
    inputs' batch and sequence axes; a classifier's ``logits`` are ``{0: "batch"}``)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if optimize not in (False, True) + OPTIMIZERS:
        raise ValueError(f"optimize must be False, True (= 'ort') or one of {OPTIMIZERS}")
    if not str(path).endswith(".onnx"):
        raise ValueError(f"path must end with .onnx, got {path!r}")
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    spec = InputSpec.from_example(example_inputs, dynamic_axes)
    model = model.eval()
    notes: list[str] = []
    wrapper = _FirstOutput(_exportable(model, notes), spec.names, spec.as_kwargs).eval()
    with atomic_path(path, suffix=".tmp.onnx") as tmp:  # renamed to path only if verified
        used_opset = _export(wrapper, spec, tmp, opset, exporter, output_name, output_axes)
        report = ExportReport(path=path, exporter=exporter, opset=used_opset, size_bytes=0,
                              input_names=list(spec.names), output_name=output_name, notes=notes)
        if check:
            _verify(model, spec, tmp, path, shapes, atol, report)
    report.size_bytes = os.path.getsize(path)
    if not check:
        report.notes.append("parity NOT checked (check=False)")
    if optimize:
        _optimize(model, spec, path, shapes, atol, report, "ort" if optimize is True else optimize)
    return report


def _verify(model, spec, tmp: str, path: str, shapes, atol: float, report: ExportReport) -> None:
    """Parity of the temporary export; on failure it becomes ``<stem>.failed.onnx`` and raises."""
    failed = path[: -len(".onnx")] + ".failed.onnx"
    try:
        report.max_abs_diff = parity(model, spec, ort_session(tmp), shapes)
    except Exception as exc:  # onnxruntime cannot load / run it at some shape
        _fail(tmp, path, failed)
        raise ParityError(f"onnxruntime failed on the export ({type(exc).__name__}: {exc}); "
                          f"NOT written to {path}, kept as {failed}", float("inf"), failed) from exc
    worst = max(report.max_abs_diff.values())
    if not worst <= atol:
        _fail(tmp, path, failed)
        raise ParityError(f"onnxruntime differs from PyTorch by {worst:.3g} > atol {atol:g} "
                          f"({report.max_abs_diff}); NOT written to {path}, kept for "
                          f"inspection as {failed}", worst, failed)


def _fail(tmp: str, path: str, failed: str) -> None:
    os.replace(tmp, failed)
    _remove(path, path[: -len(".onnx")] + ".opt.onnx")  # stale files would look good


def _exportable(model: nn.Module, notes: list[str]) -> nn.Module:
    """A copy with nn.MultiheadAttention swapped for SlimMultiheadAttention (same math): the
    TorchScript trace of nn.MultiheadAttention bakes ``batch * num_heads`` into a Reshape."""
    from passes.strip.mha import SlimMultiheadAttention

    names = [n for n, m in model.named_modules() if type(m) is nn.MultiheadAttention]
    if not names:
        return model
    clone = copy.deepcopy(model)
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


@contextlib.contextmanager
def _no_mha_fastpath():
    """nn.TransformerEncoderLayer / nn.MultiheadAttention fused eval kernels have no ONNX export."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _export(wrapper: nn.Module, spec: InputSpec, out: str, opset: Optional[int], exporter: str,
            output_name: str = "output", output_axes: Optional[dict[int, str]] = None):
    args = tuple(spec.tensors)
    axes = {n: dict(a) for n, a in spec.dynamic_axes.items()}
    axes[output_name] = dict(output_axes) if output_axes is not None else spec.output_axes
    with torch.no_grad(), _no_mha_fastpath():
        if exporter == "torchscript":
            op = opset or 17
            torch.onnx.export(wrapper, args, out, input_names=list(spec.names), output_names=[output_name],
                              dynamic_axes=axes, opset_version=op, dynamo=False, do_constant_folding=True)
            return op
        from torch.export import Dim
        dims = {}
        shapes = []
        for n in spec.names:
            shapes.append({ax: dims.setdefault(label, Dim(label, min=1, max=4096))
                           for ax, label in spec.dynamic_axes.get(n, {}).items()})
        prog = torch.onnx.export(wrapper, args, dynamic_shapes=(tuple(shapes),), input_names=list(spec.names),
                                 output_names=[output_name], opset_version=opset, dynamo=True,
                                 external_data=False, optimize=True)
        prog.save(out, external_data=False)
        return opset or prog.model.opset_imports.get("", None)


OPTIMIZERS = ("ort", "transformers")


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
        report.optimized_path, report.optimized_max_abs_diff = opt, diffs
    except Exception as exc:  # an optimizer failure never spoils the verified export
        _remove(opt)
        report.notes.append(str(exc) if isinstance(exc, ParityError) else
                            f"optimization failed: {type(exc).__name__}: {exc}")
