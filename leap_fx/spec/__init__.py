"""What the user asks for, as plain data: no torch, JSON round trips, validation (the lowest floor).

``target.py`` (``Target``: density / flops / latency) -> ``method.py`` (``MethodConfig``, ``JobDefaults``)
-> ``mask.py`` (``MaskSpec``: granularities, the target of a masking method) ; ``train.py``
(``TrainConfig``) ; ``options.py`` (``PruneOptions``, the job's request) ; ``fields.py`` (help text as
field metadata).
"""
from leap_fx.spec.fields import flag_of, help_of, is_action, option
from leap_fx.spec.mask import (
           DEFAULT_EXCLUDE,
           GRANULARITY_PRESETS,
           TIED,
           MaskSpec,
           parse_granule,
           stored_block,
)
from leap_fx.spec.method import (
           DEFAULT_GRANULARITY,
           DEFAULT_LR,
           STUDENT_INITS,
           JobDefaults,
           MethodConfig,
)
from leap_fx.spec.options import DEVICES, MODES, QUANTIZE, PruneOptions, action_fields
from leap_fx.spec.target import (
           DEFAULT_TARGET,
           STRIPPED_UNITS,
           UNITS,
           Target,
           resolve_target,
)
from leap_fx.spec.train import TrainConfig

__all__ = ["flag_of", "help_of", "is_action", "option", "DEFAULT_EXCLUDE", "GRANULARITY_PRESETS", "TIED",
           "MaskSpec", "parse_granule", "stored_block", "DEFAULT_GRANULARITY", "DEFAULT_LR", "STUDENT_INITS",
           "JobDefaults", "MethodConfig", "DEVICES", "MODES", "QUANTIZE", "PruneOptions", "action_fields",
           "DEFAULT_TARGET", "STRIPPED_UNITS", "UNITS", "Target", "resolve_target", "TrainConfig"]
