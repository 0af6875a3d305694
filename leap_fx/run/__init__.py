"""The job: ``options.py`` (PruneOptions, modes) -> ``rundir.py`` (the --out folder) -> ``job.py``
(data -> teacher -> method -> fold -> strip -> export) -> ``report.py`` / ``plots.py`` / ``onnx_eval.py``."""
from leap_fx.run.job import run_prune
from leap_fx.run.options import MODES, PruneOptions, pruning_methods

__all__ = ["run_prune", "MODES", "PruneOptions", "pruning_methods"]
