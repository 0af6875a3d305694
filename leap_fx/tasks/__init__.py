"""Tasks: one folder each, a config (plain data, ``config.py``) and a handler (``handler.py``): how to read
the task's data, the loss and distillation target of its outputs, its metric, its example inputs and its
ONNX inputs, outputs and metadata. Listed here explicitly (configs only: no torch on import):

    sequence-classification   texts / text pairs -> a label; accuracy             (the classification job)
    causal-lm                 text -> next token; perplexity, KV-cache ONNX       (the language-model job)
    token-classification      words -> a tag each; entity-level F1                (the task job)
    question-answering        question + context -> answer span; EM / F1 (SQuAD)  (the task job)
    image-classification      pixels -> a label; top-1 accuracy                   (the task job)

``supervised.py`` is the hooks the task job (``leap_fx.run.task_job``) calls (``SupervisedTask``);
``rows.py`` reads and checks data rows; ``predict.py`` runs a model or an ONNX file over a split.
"""
from leap_fx.tasks.causal_lm.config import CausalLMConfig
from leap_fx.tasks.image_classification.config import ImageClassificationConfig
from leap_fx.tasks.question_answering.config import QuestionAnsweringConfig
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
from leap_fx.tasks.token_classification.config import TokenClassificationConfig

BUILTIN = (SequenceClassificationConfig, CausalLMConfig, TokenClassificationConfig, QuestionAnsweringConfig,
           ImageClassificationConfig)
for _config in BUILTIN:
    add_task(_config)

__all__ = ["BUILTIN", "CausalLMConfig", "SequenceClassificationConfig", "TokenClassificationConfig",
           "QuestionAnsweringConfig", "ImageClassificationConfig", "DEFAULT_TASK", "add_task", "build_task",
           "register_task", "task_class", "task_for", "task_handler", "task_names", "JOB_TASKS"]

JOB_TASKS = ("token-classification", "question-answering", "image-classification")  # run by run/task_job.py
