"""Extractive question answering: ``config.py`` (``QuestionAnsweringConfig``) ; ``handler.py``
(``QuestionAnswering``: the task's hooks) -> ``data.py`` (SQuAD-style .json / .jsonl, every answer checked
against its context) -> ``encode.py`` (question + context windows with a doc stride, answer token spans)
-> ``loss.py`` (span cross-entropy and distillation over start / end) -> ``postprocess.py`` (best span per
question over its windows) -> ``metrics.py`` (exact match and F1 with the official SQuAD normalisation)
-> ``export.py`` (ONNX with ``start_logits`` and ``end_logits`` outputs). Only the config loads on import."""
from leap_fx.tasks.question_answering.config import QuestionAnsweringConfig

__all__ = ["QuestionAnsweringConfig"]
