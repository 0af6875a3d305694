"""The job: ``rundir.py`` (the --out folder) + ``frame.py`` (threads, the folder opened, finished or rolled
back around every job) -> ``job.py`` (data -> teacher -> method -> fold -> strip -> export; the language
model's in ``lm_job.py``, the other tasks' in ``task_job.py``) -> ``speed.py`` (latency, int8) -> ``report.py`` / ``plots.py`` ; ``evaluate.py`` (onnxruntime
scoring) ; ``roundtrip.py`` (any model through the graph side) ; ``commands/`` (the CLI's back-ends:
analyze, eval, export).

Names load lazily."""
from importlib import import_module

_EXPORTS = {"run_prune": "leap_fx.run.job"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leap_fx.run' has no attribute {name!r}")
