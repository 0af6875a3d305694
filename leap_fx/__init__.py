"""leap-fx: learned pruning for transformers, stripped and exported to a slim ONNX graph.

The lifecycle is the layout:
    request  -> leap_fx.spec          PruneOptions, method configs, targets: plain data
    analyze  -> passes.analyze        Plan {fqn -> attention / feed-forward family}
    prepare  -> leap_fx.masks         GranuleMask parametrizations over mask owners
    cost     -> leap_fx.costs         what a target costs (density / FLOPs / latency)
    prune    -> leap_fx.methods       a method: trained (leap_fx.train loop) or one-shot (calibrate)
    plugin   -> leap_fx.plugin        Pruner: any method on any model, your batches and loss_fn
    fold     -> leap_fx.masks         bake deterministic masks into plain weights
    strip    -> passes.strip          remove empty heads / neurons exactly (self-checked)
    export   -> passes.export         ONNX + onnxruntime parity check
    the job  -> leap_fx.run           data -> teacher -> method -> ... -> report.json

This module is a convenience facade for users (names load lazily); the library itself imports the
defining modules directly.
"""
from importlib import import_module

from leap_fx.env.version import VERSION as __version__  # noqa: F401 (the package version)

# public name -> module that defines it (imported lazily so `import leap_fx` stays light)
_EXPORTS = {
    "LeapConfig": "leap_fx.methods.leap.config",
    "KwonConfig": "leap_fx.methods.kwon.config",
    "CofiConfig": "leap_fx.methods.cofi.config",
    "SparseBertConfig": "leap_fx.methods.sparsebert.config",
    "MagnitudeConfig": "leap_fx.methods.magnitude.config",
    "MovementConfig": "leap_fx.methods.movement.config",
    "L2OneShotConfig": "leap_fx.methods.l2_oneshot.config",
    "MaskSpec": "leap_fx.spec.mask",
    "GRANULARITY_PRESETS": "leap_fx.spec.mask",
    "Target": "leap_fx.spec.target",
    "target_costs": "leap_fx.costs.budget",
    "latency_table": "leap_fx.costs.latency",
    "quantize_int8": "passes.export.quantize",
    "GranuleMask": "leap_fx.masks.carrier",
    "LeapScores": "leap_fx.masks.topk",
    "ScheduledTopK": "leap_fx.masks.topk",
    "FixedMask": "leap_fx.masks.owner",
    "LeapPruning": "leap_fx.masks.prune_api",
    "leap_prune": "leap_fx.masks.prune_api",
    "prepare_masks": "leap_fx.methods.registry",
    "param_groups": "leap_fx.masks.lifecycle",
    "fold": "leap_fx.plugin.safeguards",
    "freeze": "leap_fx.masks.lifecycle",
    "owners": "leap_fx.masks.lifecycle",
    "densities": "leap_fx.masks.lifecycle",
    "LeapRegularizer": "leap_fx.methods.leap.regularizer",
    "TrainConfig": "leap_fx.spec.train",
    "PruneOptions": "leap_fx.spec.options",
    "run_prune": "leap_fx.run.job",
    "Plan": "passes.analyze.plan",
    "analyze": "passes.analyze.match",
    "strip": "leap_fx.plugin.safeguards",
    "Pruner": "leap_fx.plugin.pruner",
    "PruningWarning": "leap_fx.plugin.safeguards",
    "TaskLoss": "leap_fx.objectives.task_loss",
    "ClassificationLoss": "leap_fx.objectives.task_loss",
    "StripReport": "passes.strip.report",
    "export_onnx": "passes.export.onnx",
    "ParityError": "passes.export.parity",
    "save_slim": "passes.export.slim_io",
    "load_slim": "passes.export.slim_io",
    "count_flops": "passes.measure",
    "count_params": "passes.measure",
}
_ALIASES = {"fit": ("leap_fx.train.loop", "train"),  # not `train`: that name is the subpackage leap_fx.train
            "LeapMask": ("leap_fx.masks.carrier", "GranuleMask"), "build_method": ("leap_fx.methods.registry", "build"),
            "prepare": ("leap_fx.methods.registry", "prepare_masks")}

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
