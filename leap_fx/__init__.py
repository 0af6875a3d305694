"""leap-fx: learned pruning for transformers, stripped and exported to a slim ONNX graph.

The lifecycle is the layout:
    analyze  -> passes.analyze        Plan {fqn -> attention / feed-forward family}
    prepare  -> leap_fx.masks         GranuleMask parametrizations over mask owners
    prune    -> leap_fx.methods       a method: trained (leap_fx.train loop) or one-shot (calibrate)
    fold     -> leap_fx.masks         bake deterministic masks into plain weights
    strip    -> passes.strip          remove empty heads / neurons exactly (self-checked)
    export   -> passes.export         ONNX + onnxruntime parity check
    the job  -> leap_fx.run           data -> teacher -> method -> ... -> report.json

This module is a convenience facade for users (names load lazily); the library itself imports the
defining modules directly.
"""
from importlib import import_module

__version__ = "0.2.0"

# public name -> module that defines it (imported lazily so `import leap_fx` stays light)
_EXPORTS = {
    "LeapConfig": "leap_fx.methods.leap",
    "MagnitudeConfig": "leap_fx.methods.magnitude",
    "MovementConfig": "leap_fx.methods.movement",
    "L2OneShotConfig": "leap_fx.methods.l2_oneshot",
    "MaskSpec": "leap_fx.masks.spec",
    "GRANULARITY_PRESETS": "leap_fx.masks.spec",
    "Target": "leap_fx.masks.target",
    "target_costs": "leap_fx.masks.target",
    "latency_table": "leap_fx.masks.latency_table",
    "quantize_int8": "passes.export.quantize",
    "GranuleMask": "leap_fx.masks.carrier",
    "LeapScores": "leap_fx.masks.topk",
    "ScheduledTopK": "leap_fx.masks.topk",
    "FixedMask": "leap_fx.masks.owner",
    "LeapPruning": "leap_fx.masks.prune_api",
    "leap_prune": "leap_fx.masks.prune_api",
    "prepare": "leap_fx.masks.prepare",
    "param_groups": "leap_fx.masks.prepare",
    "fold": "leap_fx.masks.prepare",
    "freeze": "leap_fx.masks.prepare",
    "owners": "leap_fx.masks.prepare",
    "densities": "leap_fx.masks.prepare",
    "LeapRegularizer": "leap_fx.methods.leap_regularizer",
    "methods": "leap_fx.methods",
    "build_method": "leap_fx.methods",
    "TrainConfig": "leap_fx.train.config",
    "train": "leap_fx.train.loop",
    "PruneOptions": "leap_fx.run.options",
    "run_prune": "leap_fx.run.job",
    "Plan": "passes.analyze.plan",
    "analyze": "passes.analyze.analyze",
    "strip": "passes.strip.strip",
    "StripReport": "passes.strip.report",
    "export_onnx": "passes.export.onnx",
    "ParityError": "passes.export.parity",
    "save_slim": "passes.export.slim_io",
    "load_slim": "passes.export.slim_io",
    "count_flops": "passes.measure",
    "count_params": "passes.measure",
}
_ALIASES = {"LeapMask": ("leap_fx.masks.carrier", "GranuleMask"), "build_method": ("leap_fx.methods", "build")}

__all__ = sorted(set(_EXPORTS) | set(_ALIASES))


def __getattr__(name):
    if name in _ALIASES:
        mod, attr = _ALIASES[name]
        return getattr(import_module(mod), attr)
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leap_fx' has no attribute {name!r}")


def __dir__():
    return __all__
