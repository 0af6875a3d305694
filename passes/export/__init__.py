"""Stage 4, export: the slim model as ONNX (verified in onnxruntime) and as a slim directory.

``onnx.py`` (export_onnx) -> ``inputs.py`` (input names, dynamic axes, inputs at other shapes) ->
``parity.py`` (onnxruntime vs PyTorch); ``slim_io.py`` (safetensors + manifest round trip).
"""
from passes.export.axes import ControlFlowError
from passes.export.fallback import ExportError
from passes.export.onnx import EXPORTERS, ExportReport, export_onnx
from passes.export.parity import ParityError, first_tensor, ort_session
from passes.export.slim_io import load_slim, load_strip_report, read_manifest, save_slim

__all__ = ["ControlFlowError", "EXPORTERS", "ExportError", "ExportReport", "export_onnx", "ParityError", "first_tensor", "ort_session",
           "load_slim", "load_strip_report", "read_manifest", "save_slim"]
