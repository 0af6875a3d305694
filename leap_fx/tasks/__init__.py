"""Tasks: one folder each, a config (plain data, ``config.py``) and a handler (``handler.py``): how to read
the task's data, the loss and distillation target of its outputs, its metric, its example inputs and its
ONNX inputs, outputs and metadata. Listed here explicitly (configs only: no torch on import):

    sequence-classification   texts / text pairs -> a label; accuracy           (the job's first task)
    causal-lm                 text -> next token; perplexity, KV-cache ONNX     (language models)
"""
from leap_fx.tasks.causal_lm.config import CausalLMConfig
from leap_fx.tasks.registry import (
    DEFAULT_TASK,
    add_task,
    build_task,
    register_task,
    task_class,
    task_for,
    task_handler,
    task_names,
)
from leap_fx.tasks.sequence_classification.config import SequenceClassificationConfig

BUILTIN = (SequenceClassificationConfig, CausalLMConfig)
for _config in BUILTIN:
    add_task(_config)

__all__ = ["BUILTIN", "CausalLMConfig", "SequenceClassificationConfig", "DEFAULT_TASK", "add_task", "build_task",
           "register_task", "task_class", "task_for", "task_handler", "task_names"]
