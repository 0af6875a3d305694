"""export_decoder: a (possibly stripped) decoder-only causal LM as one ONNX graph with a KV cache.

Inputs ``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.{i}.key`` / ``.value``;
outputs ``logits``, ``present.{i}.key`` / ``.value`` (optimum's names, ``kv_cache.py``); every layer
with its own kv-head count. Dynamic ``batch``, ``sequence`` and ``past_sequence`` (the mask and the
presents span ``total_sequence`` = past + sequence): one graph serves prefill (past 0) and decoding.

Export paths, in order (``exporter="auto"``): TorchScript (``torch.onnx.export(dynamo=False)``,
traced at batch 2, 3 new tokens, past 4, so no size is specialised; an explicit ``attention_mask`` and
``position_ids`` are always inputs, which keeps transformers' packed-sequence detection, made of ops
TorchScript lacks, out of the trace), then the dynamo exporter. Each is written to a temporary file and
checked by ``decoder_parity.decode_parity`` (a prefill and ``steps`` decoding steps: logits and the cache
each within ``atol`` of their largest value, absolute below 1);
the first that passes is renamed to ``path`` with its metadata. Nothing unverified is ever at ``path``:
a failing graph is kept as ``<stem>.failed.onnx`` and the error names every path tried.

``metadata`` (:class:`LmMetadata`: tokenizer folder, EOS ids, chat template present, free-form
``extra``) is written into the file with the cache layout and the parity result.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from passes.export.decoder_parity import decode_parity
from passes.export.fallback import ExportError, filtered_warnings
from passes.export.kv_cache import (
    INPUTS,
    CacheLayout,
    DecoderWithCache,
    cache_layout,
    past_names,
    present_names,
)
from passes.export.metadata import mark_written, refuse_theirs, write_metadata
from passes.export.parity import ParityError, ort_session
from passes.export.tied import share_tied_head
from passes.io import atomic_path, check_file_target, quiet_logger
from passes.hf_experts import BATCHED, batched_experts

EXPORTERS = ("auto", "torchscript", "dynamo")
__all__ = ["DecoderExportReport", "LmMetadata", "export_decoder"]


@dataclass
class LmMetadata:
    """What a generator needs beside the graph (the caller's: passes knows no tokenizer)."""

    tokenizer: Optional[str] = None           # tokenizer folder, relative to the ONNX file
    eos_token_ids: list[int] = field(default_factory=list)
    chat_template: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def props(self) -> dict[str, Any]:
        out = {"tokenizer": self.tokenizer, "eos_token_ids": [int(i) for i in self.eos_token_ids],
               "chat_template": self.chat_template}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}


@dataclass
class DecoderExportReport:
    path: str
    exporter: str
    opset: Optional[int]
    size_bytes: int
    num_layers: int
    kv_heads: list[int]
    head_dims: list[int]
    input_names: list[str]
    output_names: list[str]
    parity: dict = field(default_factory=dict)     # decode_parity's result (max_abs_diff, prefill, steps)
    attempts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return float(self.parity.get("max_abs_diff", float("nan")))

    def to_dict(self) -> dict:
        return asdict(self)


def _axes(n: int) -> dict[str, dict[int, str]]:
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in past_names(n)})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in present_names(n)})
    return axes


def _example(layout: CacheLayout, vocab: int) -> tuple:
    g = torch.Generator().manual_seed(0)
    batch, seq, past = 2, 3, 4
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    pos = torch.arange(past, past + seq).expand(batch, -1).contiguous()
    return (ids, mask, pos, *layout.empty(batch, past, g))


def _torchscript(wrapper, args, out: str, n: int, opset: int, kept: list) -> int:
    with filtered_warnings(kept):
        torch.onnx.export(wrapper, args, out, input_names=list(INPUTS) + past_names(n),
                          output_names=["logits"] + present_names(n), dynamic_axes=_axes(n), opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    return opset


def _dynamo(wrapper, args, out: str, n: int, opset: int, kept: list) -> int:
    import onnx
    from torch.export import Dim
    b, s, p = Dim("batch"), Dim("sequence"), Dim("past_sequence", min=0)
    shapes = ({0: b, 1: s}, {0: b, 1: Dim.AUTO}, {0: b, 1: s}, tuple({0: b, 2: p} for _ in range(2 * n)))
    with filtered_warnings(kept), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            quiet_logger("torch.onnx._internal.exporter._registration"):
        prog = torch.onnx.export(wrapper, args, dynamic_shapes=shapes, input_names=list(INPUTS) + past_names(n),
                                 output_names=["logits"] + present_names(n), opset_version=opset, dynamo=True,
                                 external_data=False, optimize=True)
        prog.save(out, external_data=False)
    proto = onnx.load(out)
    for value in list(proto.graph.input) + list(proto.graph.output):  # name the symbols as TorchScript does
        for axis, label in _axes(n).get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = label
    onnx.save(proto, out)
    return opset


def _attempt(kind, model, layout, path, failed, opset, atol, steps, vocab, extra: dict) -> DecoderExportReport:
    n = layout.num_layers
    wrapper = DecoderWithCache(model).eval()
    kept: list[str] = []
    with atomic_path(path, suffix=".tmp.onnx") as tmp:
        try:
            with torch.no_grad():
                used = (_torchscript if kind == "torchscript" else _dynamo)(wrapper, _example(layout, vocab), tmp, n,
                                                                             opset, kept)
        except Exception as exc:  # the PyTorch exporter failed: one line (its messages dump whole graphs)
            raise ExportError(f"the PyTorch ONNX exporter ({kind}) failed: {type(exc).__name__}: "
                              f"{(str(exc).strip().splitlines() or [''])[0][:300]}") from exc
        tied = share_tied_head(tmp)  # one copy of a tied embedding (checked by the parity below)
        try:
            result = decode_parity(model, ort_session(tmp), layout, vocab_size=vocab, steps=steps)
        except Exception as exc:
            mark_written(tmp)  # ours: a later export may replace or remove it
            os.replace(tmp, failed)
            raise ParityError(f"onnxruntime failed on the export ({type(exc).__name__}: "
                              f"{(str(exc).strip().splitlines() or [''])[0][:300]})", float("inf"), failed,
                              side="onnxruntime") from exc
        if not (result["max_rel_diff"] <= atol and result["cache_max_rel_diff"] <= atol):
            mark_written(tmp)  # ours: a later export may replace or remove it
            os.replace(tmp, failed)
            raise ParityError(f"onnxruntime differs from PyTorch: logits by {result['max_abs_diff']:.3g} (prefill "
                              f"{result['prefill']:.3g}, steps {[f'{d:.2g}' for d in result['steps']]}; "
                              f"{result['max_rel_diff']:.3g} of the largest logit), the cache by "
                              f"{result['cache_max_rel_diff']:.3g} of its largest value; atol {atol:g}",
                              max(result["max_rel_diff"], result["cache_max_rel_diff"]), failed)
        report = DecoderExportReport(path=path, exporter=kind, opset=used, size_bytes=0, num_layers=n,
                                     kv_heads=list(layout.kv_heads), head_dims=list(layout.key_dims),
                                     input_names=list(INPUTS) + past_names(n),
                                     output_names=["logits"] + present_names(n), parity=result,
                                     notes=[f"warning kept visible: {k}" for k in kept]
                                     + (["tied output head: one copy of the embedding (Gemm transB)"] if tied else []))
        write_metadata(tmp, {**_props(report), **extra})
        report.size_bytes = os.path.getsize(tmp)
    return report


def _props(report: DecoderExportReport) -> dict:
    return {"leap_fx_task": "causal-lm", "num_layers": report.num_layers, "kv_heads": report.kv_heads,
            "head_dims": report.head_dims, "parity_max_abs_diff": report.max_abs_diff,
            "parity_max_rel_diff": report.parity["max_rel_diff"],
            "parity_cache_max_rel_diff": report.parity["cache_max_rel_diff"],
            "parity_decode_steps": len(report.parity["steps"])}


def export_decoder(model: nn.Module, path: str, *, atol: float = 1e-4, steps: int = 8, opset: int = 17,
                   exporter: str = "auto", metadata: Optional[LmMetadata] = None) -> DecoderExportReport:
    """Export ``model`` (an HF causal LM, eval mode) to ``path`` with a KV cache, parity checked; see module doc."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if not str(path).endswith(".onnx"):
        raise ValueError(f"path must end with .onnx, got {path!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (decoding steps checked after the prefill), got {steps}")
    path = check_file_target(path, "export_decoder: path")
    failed = path[: -len(".onnx")] + ".failed.onnx"
    refuse_theirs("export_decoder", [failed])  # a user's file there is never replaced nor deleted
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model = model.eval()
    layout = cache_layout(model)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    tried, errors = [], []
    for kind in ("torchscript", "dynamo"):
        if exporter not in ("auto", kind):
            continue
        try:
            with batched_experts(model) as replaced:  # fused experts: batched_mm exports, grouped_mm does not
                report = _attempt(kind, model, layout, path, failed, opset, atol, steps, vocab,
                                  metadata.props() if metadata is not None else {})
        except (ExportError, ParityError) as exc:
            tried.append(f"{kind}: {exc}")
            errors.append(exc)
            continue
        if errors and os.path.exists(failed):
            os.remove(failed)
        report.attempts = tried + [f"{kind}: passed"]
        if replaced is not None:
            report.notes.append(f"experts exported with experts_implementation={BATCHED!r} (same function; the "
                                f"model's own {replaced!r} has no ONNX export); the model's setting is unchanged")
        return report
    text = (f"export_decoder of {type(model).__name__} failed on every path ({'; '.join(tried)}). NOT written to "
            f"{path} ({'the file there from before was left unchanged' if os.path.exists(path) else 'nothing was written there'})")
    parity = [e for e in errors if isinstance(e, ParityError)]
    if parity:
        raise ParityError(text, max(e.max_abs_diff for e in parity), failed if os.path.exists(failed) else None)
    raise ExportError(text)
