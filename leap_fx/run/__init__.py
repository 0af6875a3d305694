"""The job: ``options.py`` (PruneOptions, modes) -> ``rundir.py`` (the --out folder) -> ``job.py``
(data -> teacher -> method -> fold -> strip -> export) -> ``report.py`` / ``plots.py`` / ``onnx_eval.py``.

Names load lazily: ``leap_fx.run.threads`` is read by the CLI before torch may be imported."""
from importlib import import_module

_EXPORTS = {"run_prune": "leap_fx.run.job", "MODES": "leap_fx.run.options", "PruneOptions": "leap_fx.run.options",
            "pruning_methods": "leap_fx.run.options"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leap_fx.run' has no attribute {name!r}")
