"""Graph passes, independent of any pruning method: the lifecycle's model-side stages.

    analyze/   trace a model, find attention and FFN families -> Plan
    strip/     remove zeroed heads / neurons exactly (self-checked)
    export/    ONNX with onnxruntime parity; slim model directories
    measure.py parameters and FLOPs (one counter for everything)
    io.py      atomic files and JSON round trips (shared with leap_fx)
"""
from passes.analyze import AnalyzeError, AttentionFamily, FeedForwardFamily, Plan, Slice, analyze
from passes.export import ExportReport, ParityError, export_onnx, load_slim, load_strip_report, save_slim
from passes.measure import count_flops, count_params
from passes.strip import StripError, StripReport, strip

__all__ = ["AnalyzeError", "AttentionFamily", "FeedForwardFamily", "Plan", "Slice", "analyze", "ExportReport",
           "ParityError", "export_onnx", "load_slim", "load_strip_report", "save_slim", "count_flops",
           "count_params", "StripError", "StripReport", "strip"]
