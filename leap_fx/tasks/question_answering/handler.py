"""The extractive-QA task's hooks (``SupervisedTask``), driven by the task job.

Input ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) ``[windows, sequence]`` (question first, then
a window of the context); outputs ``start_logits`` and ``end_logits`` ``[windows, sequence]``; metric: exact
match and F1 in percent (``metrics.py``) of the best span per question (``postprocess.py``).
``model.onnx`` carries the max length, the doc stride, the answer length limit and the tokenizer.
"""
from __future__ import annotations

import numpy as np

from leap_fx.data.lengths import model_limit
from leap_fx.hf.models import load_tokenizer
from leap_fx.tasks.question_answering.config import QuestionAnsweringConfig
from leap_fx.tasks.question_answering.data import read_qa_file
from leap_fx.tasks.question_answering.encode import encode_questions, window_length
from leap_fx.tasks.question_answering.export import OUTPUTS, export_span_model
from leap_fx.tasks.question_answering.loss import SpanLoss, span_logits
from leap_fx.tasks.question_answering.metrics import squad_scores
from leap_fx.tasks.question_answering.postprocess import best_spans
from leap_fx.tasks.registry import register_task
from leap_fx.tasks.rows import Rows
from leap_fx.tasks.supervised import Split, SupervisedTask, TaskData
from leap_fx.tasks.token_classification.encode import check_fast

__all__ = ["QuestionAnswering"]


@register_task(QuestionAnsweringConfig)
class QuestionAnswering(SupervisedTask):
    """Question + context -> answer span (module docstring)."""

    output_names = OUTPUTS
    per_token = True

    def read_file(self, path: str, opts) -> Rows:
        return read_qa_file(path, opts.drop_invalid)

    def load_processor(self, folder: str, model):
        tokenizer = load_tokenizer(folder)
        check_fast(tokenizer, folder)
        return tokenizer

    def encode(self, data: TaskData, tokenizer, opts, model_config=None) -> tuple[dict[str, Split], dict]:
        c = self.config
        length = window_length(opts.max_length, c.default_max_length, model_limit(model_config, tokenizer))
        splits = {name: self._split(name, tokenizer, rows, length) for name, rows in data.splits.items()}
        return splits, {"max_length": length, "doc_stride": c.doc_stride, "max_answer_length": c.max_answer_length,
                        "n_best": c.n_best}

    def _split(self, name: str, tokenizer, rows: Rows, length: int) -> Split:
        tensors, meta = encode_questions(tokenizer, rows.rows, length, self.config.doc_stride)
        return Split(name, tensors, rows.rows, meta)

    def task_loss(self) -> SpanLoss:
        return SpanLoss()

    def outputs(self, out) -> dict:
        stacked = span_logits(out)
        return {"start_logits": stacked[..., 0], "end_logits": stacked[..., 1]}

    def predictions(self, outputs: dict, split: Split) -> dict[str, str]:
        """Question id -> answer text (the best span over its windows)."""
        m, c = split.meta, self.config
        texts = best_spans(np.asarray(outputs["start_logits"]), np.asarray(outputs["end_logits"]),
                           m["window_question"], m["offsets"], m["contexts"], c.n_best, c.max_answer_length)
        return dict(zip(m["ids"], texts))

    def scores(self, outputs: dict, split: Split) -> dict:
        return {**squad_scores(self.predictions(outputs, split), split.meta["answers"]),
                "windows": split.features}

    def export(self, model, example: dict, path: str):
        return export_span_model(model, example, path)

    def metadata(self, report: dict, settings: dict) -> dict:
        return {**super().metadata(report, settings), "tokenizer": "tokenizer",
                "output": "start_logits, end_logits [batch, sequence]: the answer is the context span between the "
                          "best start and end (end >= start, at most max_answer_length tokens) over a question's "
                          "windows (question first; windows of max_length overlapping by doc_stride)"}
