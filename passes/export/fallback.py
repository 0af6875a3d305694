"""The export paths export_onnx tries, in order, and how each one runs the PyTorch exporter.

1. ``torchscript``: ``torch.onnx.export(dynamo=False)`` (fastest graphs in onnxruntime here);
2. ``torchscript+attention_mask``: the same with an all-ones ``attention_mask`` (and
   ``decoder_attention_mask``) added when the forward accepts one and the example lacks it:
   transformers 5 builds masks with ops the TorchScript exporter lacks (``aten::diff`` in
   ``find_packed_sequence_indices``) only when no mask is given;
3. ``torchscript with fixed <axes>``: only after a written graph failed the parity check, the
   float inputs' non-batch axes fixed at the example's size (Swin traces its padding for one image
   size; the ONNX then takes that size only, as ViT's does);
4. ``dynamo``: ``torch.onnx.export(dynamo=True)`` (onnxscript), with the mask if one was added
   (and its own fixed-axes variant).

A mixture-of-experts model whose transformers experts run ``grouped_mm`` or ``eager`` (``passes/hf_experts.py``:
``torch.histc`` and the custom op ``transformers::grouped_mm_fallback`` have no ONNX export; the eager loop
bakes in the experts the example routed to) first tries each path with ``experts_implementation
="batched_mm"`` (the same function), set on the exporter's copy only: ``Attempt.experts``, recorded in
the path's name. When a path fails, its reason names the op the exporter could not convert
(``exporter_reason``: the ONNX exporters' messages bury it under their "Next steps").

Every path is parity-checked by the caller; the first that passes is kept and the path recorded.
Warnings raised while exporting are filtered at this call site: the known-harmless ones
(``HARMLESS``: shape-only TracerWarnings of transformers' mask helpers, the ``aten::index``
note, the TorchScript exporter's deprecation notice) are dropped; every other warning is
re-issued (so it stays visible) and returned for the report.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import re
import warnings
from dataclasses import dataclass, replace
from typing import Optional

import torch

from passes.export.inputs import InputSpec
from passes.hf_experts import BATCHED, experts_implementation
from passes.io import quiet_logger

# (category name, file regex, message regex): warnings known to be harmless for our exports
HARMLESS = (
    ("TracerWarning", r"transformers/(masking_utils|integrations/sdpa_attention)\.py", r"Python boolean"),
    ("TracerWarning", r"torch/nn/functional\.py", r"Python boolean"),  # F.embedding's padding_idx check
    # DynamicLayer's empty start tensor and its `numel() == 0` test: the KV-cache export traces past > 0,
    # where both branches agree (past 0 included: decode_parity checks a prefill on an empty cache)
    ("TracerWarning", r"transformers/cache_utils\.py", r"registered as constants|Python boolean"),
    ("UserWarning", r"torch/onnx/", r"aten::index operator of advanced indexing"),
    ("DeprecationWarning", r"torch/onnx/|passes/export/", r"legacy TorchScript-based ONNX export|will be removed"),
    ("FutureWarning", r"torch/onnx/", r"."),
)
MASKS = (("input_ids", "attention_mask"), ("decoder_input_ids", "decoder_attention_mask"))
# (regex on the exporter's message and its causes, reason): the op the exporter could not convert
_OPS = ((r"No ONNX function found for <OpOverload\(op='([\w.]+)'", "no ONNX function for {}"),
        (r"Exporting the operator '([\w:.]+)' to ONNX (opset version \d+) is not supported",
         "no ONNX export of operator {} at {}"),
        (r"Unsupported: (.+)", "torch.export: unsupported {}"))


class ExportError(RuntimeError):
    """The PyTorch ONNX exporter failed (``stage`` "export"), or every export path failed."""


@dataclass
class Attempt:
    name: str
    exporter: str   # "torchscript" | "dynamo"
    spec: InputSpec
    fixed: bool = False  # tried only after a written graph failed the parity check
    experts: Optional[str] = None  # transformers experts implementation set on the exporter's copy


def harmless(w: warnings.WarningMessage) -> bool:
    path = str(w.filename).replace("\\", "/")
    return any(w.category.__name__ == cat and re.search(f, path) and re.search(m, str(w.message))
               for cat, f, m in HARMLESS)


@contextlib.contextmanager
def filtered_warnings(kept: list[str], dropped: Optional[list[str]] = None):
    """Record warnings; drop the known-harmless ones (``HARMLESS``, listed in ``dropped``), re-issue the
    rest and list them in ``kept``. If the block raises, every warning is re-issued (it may explain why)."""
    ok = False
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield
        ok = True
    finally:
        for w in seen:
            if ok and harmless(w):
                if dropped is not None:
                    dropped.append(f"{w.category.__name__}: {str(w.message).splitlines()[0][:60]}")
                continue
            kept.append(f"{w.category.__name__} at {w.filename}:{w.lineno}: {str(w.message).splitlines()[0][:200]}")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def with_masks(model: torch.nn.Module, spec: InputSpec) -> Optional[InputSpec]:
    """``spec`` plus all-ones attention masks the forward accepts and the example lacks, else None."""
    try:
        accepted = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return None
    if not spec.as_kwargs:
        return None
    names, tensors, axes = list(spec.names), list(spec.tensors), dict(spec.dynamic_axes)
    for ids, mask in MASKS:
        if ids in names and mask not in names and mask in accepted:
            src = tensors[names.index(ids)]
            names.append(mask)
            tensors.append(torch.ones(src.shape[:2], dtype=torch.long))
            axes[mask] = {a: lab for a, lab in spec.dynamic_axes.get(ids, {}).items() if a < 2}
    if len(names) == len(spec.names):
        return None
    return replace(spec, names=names, tensors=tensors, dynamic_axes=axes)


def fixed_float_axes(spec: InputSpec) -> Optional[InputSpec]:
    """``spec`` with the non-batch axes of floating inputs (image height / width) fixed, else None."""
    axes = {n: {a: lab for a, lab in spec.dynamic_axes.get(n, {}).items()
                if lab == "batch" or not t.is_floating_point()} for n, t in zip(spec.names, spec.tensors)}
    if axes == {n: spec.dynamic_axes.get(n, {}) for n in spec.names}:
        return None
    return replace(spec, dynamic_axes=axes)


def attempts(model: torch.nn.Module, spec: InputSpec, exporter: str) -> list[Attempt]:
    """The paths to try for ``exporter`` ("auto", "torchscript" or "dynamo"). A ``fixed`` path (the float
    inputs' non-batch axes fixed, as for a model checking its image size) is tried only after a graph
    was written but was wrong at other sizes (Swin's padding traced for one image size)."""
    masked = with_masks(model, spec)
    out = []
    fixed = fixed_float_axes(masked or spec)
    names = sorted({lab for ax in spec.dynamic_axes.values() for lab in ax.values()}
                   - {lab for ax in fixed.dynamic_axes.values() for lab in ax.values()}) if fixed else []
    swap = experts_implementation(model) not in (None, BATCHED)
    for kind in ("torchscript", "dynamo"):
        if exporter not in ("auto", kind):
            continue
        for experts in ([BATCHED] if swap else []) + [None]:  # exportable experts first (module doc)
            tag = f" (experts {experts})" if experts else ""
            if kind == "torchscript" or masked is None:
                out.append(Attempt(kind + tag, kind, spec, experts=experts))
            if masked is not None:
                out.append(Attempt(f"{kind}+attention_mask{tag}", kind, masked, experts=experts))
            if fixed is not None:
                out.append(Attempt(f"{kind} with fixed {', '.join(names)}{tag}", kind, fixed, fixed=True,
                                   experts=experts))
    return out


@contextlib.contextmanager
def _no_mha_fastpath():
    """nn.TransformerEncoderLayer / nn.MultiheadAttention fused eval kernels have no ONNX export."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def run_exporter(wrapper: torch.nn.Module, attempt: Attempt, out: str, opset: Optional[int],
                 kept: list[str], output_name: str = "output",
                 output_axes: Optional[dict[int, str]] = None, dropped: Optional[list[str]] = None) -> Optional[int]:
    """Write ``out`` with the attempt's exporter; ExportError (PyTorch side) on failure; returns the opset."""
    spec = attempt.spec
    args = tuple(spec.tensors)
    axes = {n: dict(a) for n, a in spec.dynamic_axes.items()}
    axes[output_name] = dict(output_axes) if output_axes is not None else spec.output_axes
    try:
        with torch.no_grad(), _no_mha_fastpath(), filtered_warnings(kept, dropped):
            if attempt.exporter == "torchscript":
                op = opset or 17
                torch.onnx.export(wrapper, args, out, input_names=list(spec.names), output_names=[output_name],
                                  dynamic_axes=axes, opset_version=op, dynamo=False, do_constant_folding=True)
                return op
            return _dynamo(wrapper, spec, args, out, opset, output_name)
    except Exception as exc:  # the PyTorch exporter failed: say so, one line (its messages dump whole graphs)
        raise ExportError(f"the PyTorch ONNX exporter ({attempt.exporter}) failed: {exporter_reason(exc)}") from exc


def exporter_reason(exc: BaseException) -> str:
    """One line: the exception type and the op the exporter could not convert (searched in the message and
    its causes), else the first line of the exporter's exception summary, else of its message."""
    texts, e = [], exc
    while e is not None and len(texts) < 6:
        texts.append(str(e))
        e = e.__cause__ or e.__context__
    full = "\n".join(texts)
    for pattern, say in _OPS:
        m = re.search(pattern, full)
        if m:
            op = m.group(1).replace(".", "::", 1) if "::" not in m.group(1) and say.startswith("no ONNX function") \
                else m.group(1)
            return f"{type(exc).__name__}: {say.format(op, *m.groups()[1:])[:300]}"
    summary = full.split("## Exception summary", 1)[-1] if "## Exception summary" in full else full
    first = next((ln.strip() for ln in summary.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}"


def _dynamo(wrapper, spec: InputSpec, args, out: str, opset: Optional[int], output_name: str = "output"):
    from torch.export import Dim
    shapes = tuple({ax: Dim.AUTO for ax in spec.dynamic_axes.get(n, {})} for n in spec.names)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            quiet_logger("torch.onnx._internal.exporter._registration"):  # progress, graphs, notices
        prog = torch.onnx.export(wrapper, args, dynamic_shapes=(shapes,), input_names=list(spec.names),
                                 output_names=[output_name], opset_version=opset, dynamo=True,
                                 external_data=False, optimize=True)
        prog.save(out, external_data=False)
    return opset or prog.model.opset_imports.get("", None)
