"""Graph passes, independent of any pruning method: the lifecycle's model-side stages.

    analyze/   trace a model, find attention and FFN families -> Plan
    strip/     remove zeroed heads / neurons exactly (self-checked)
    export/    ONNX with onnxruntime parity; slim model directories
    measure.py parameters and FLOPs (one counter for everything)
    io.py      atomic files and JSON round trips (shared with leap_fx)

Names load lazily (``passes.io`` is read by torch-free code: the CLI's parser, ``leap_fx.spec``).
"""
from importlib import import_module

_EXPORTS = {
    "AnalyzeError": "passes.analyze", "AttentionFamily": "passes.analyze", "FeedForwardFamily": "passes.analyze",
    "Plan": "passes.analyze", "Slice": "passes.analyze", "analyze": "passes.analyze",
    "ExportReport": "passes.export", "ParityError": "passes.export", "export_onnx": "passes.export",
    "load_slim": "passes.export", "load_strip_report": "passes.export", "save_slim": "passes.export",
    "count_flops": "passes.measure", "count_params": "passes.measure",
    "StripError": "passes.strip", "StripReport": "passes.strip", "strip": "passes.strip",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'passes' has no attribute {name!r}")


def __dir__():
    return __all__
