"""leap-fx: LEAP learnable pruning for transformers, stripped and exported to a slim ONNX graph.

Lifecycle (one module per stage):
    analyze  -> passes.trace / passes.families   Plan {fqn -> family}
    prepare  -> leap_fx.lifecycle                LeapMask parametrizations (S, sigma)
    train    -> leap_fx.train                    task + KD + LeapRegularizer (Eq. 5, 7)
    fold     -> leap_fx.lifecycle                bake masks into plain weights
    strip    -> passes.strip                     remove empty heads / neurons exactly
    export   -> passes.export                    ONNX + onnxruntime parity check
"""
from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily so `import leap_fx` stays light)
_EXPORTS = {
    "LeapConfig": "leap_fx.config",
    "GRANULARITY_PRESETS": "leap_fx.config",
    "LeapMask": "leap_fx.mask",
    "LeapScores": "leap_fx.mask",
    "LeapPruning": "leap_fx.method",
    "leap_prune": "leap_fx.method",
    "prepare": "leap_fx.lifecycle",
    "param_groups": "leap_fx.lifecycle",
    "fold": "leap_fx.lifecycle",
    "freeze": "leap_fx.lifecycle",
    "owners": "leap_fx.lifecycle",
    "densities": "leap_fx.lifecycle",
    "LeapRegularizer": "leap_fx.regularizer",
    "TrainConfig": "leap_fx.train.state",
    "Plan": "passes.plan",
    "analyze": "passes.families",
    "strip": "passes.strip",
    "export_onnx": "passes.export",
    "ParityError": "passes.export",
    "save_slim": "passes.slim_io",
    "load_slim": "passes.slim_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leap_fx' has no attribute {name!r}")


def __dir__():
    return __all__
