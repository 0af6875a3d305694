"""Stage 4, export: the slim model as ONNX (verified in onnxruntime) and as a slim directory.

``onnx.py`` (export_onnx) -> ``axes.py`` (dynamic axes from torch.export, control-flow refusal) ->
``fallback.py`` (the export paths, warnings at the call site) -> ``inputs.py`` (input names, inputs at
other shapes) -> ``parity.py`` (onnxruntime vs PyTorch); ``slim_io.py`` (safetensors + manifest).
``decoder.py`` (export_decoder): a causal LM with a KV cache (``kv_cache.py``, ``decoder_parity.py``).
"""
from passes.export.axes import ControlFlowError
from passes.export.decoder import DecoderExportReport, LmMetadata, export_decoder
from passes.export.fallback import ExportError
from passes.export.onnx import EXPORTERS, ExportReport, export_onnx
from passes.export.parity import ParityError, first_tensor, ort_session
from passes.export.slim_io import load_slim, load_strip_report, read_manifest, save_slim

__all__ = ["ControlFlowError", "DecoderExportReport", "LmMetadata", "export_decoder", "EXPORTERS", "ExportError", "ExportReport", "export_onnx", "ParityError",
           "first_tensor", "ort_session", "load_slim", "load_strip_report", "read_manifest", "save_slim"]
