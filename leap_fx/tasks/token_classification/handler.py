"""The token-classification task's hooks (``SupervisedTask``), driven by the task job.

Input ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) ``[batch, sequence]``; output ``logits
[batch, sequence, num_labels]``; metric: entity-level F1 (``metrics.py``) over the words whose first
sub-word the model reads. ``model.onnx`` carries the label names, the max length and the tokenizer.
"""
from __future__ import annotations

import numpy as np

from leap_fx.data.lengths import model_limit
from leap_fx.hf.models import load_tokenizer
from leap_fx.tasks.registry import register_task
from leap_fx.tasks.rows import Rows
from leap_fx.tasks.supervised import Split, SupervisedTask, TaskData
from leap_fx.tasks.token_classification.config import TokenClassificationConfig
from leap_fx.tasks.token_classification.data import WNUT16, read_tags_file, read_wnut16, tag_names
from leap_fx.tasks.token_classification.encode import (
    check_fast,
    choose_length,
    encode_rows,
    word_predictions,
)
from leap_fx.tasks.token_classification.loss import TokenClassificationLoss
from leap_fx.tasks.token_classification.metrics import entity_scores

__all__ = ["TokenClassification"]


@register_task(TokenClassificationConfig)
class TokenClassification(SupervisedTask):
    """Words -> one tag each (module docstring)."""

    per_token = True

    def read_file(self, path: str, opts) -> Rows:
        return read_tags_file(path, self.config.tokens_column, self.config.tags_column, opts.drop_invalid)

    def named_data(self, name: str, seed: int):
        return read_wnut16(seed) if name.lower() in WNUT16 else None

    def label_names(self, rows: Rows) -> list[str]:
        names = tag_names(rows)
        if len(names) < 2:
            raise ValueError(f"{rows.source.get('path')}: every word has the tag {names}: a tagger needs two or more")
        return names

    def labels_of(self, row) -> set:
        return set(row["tags"])

    def load_processor(self, folder: str, model):
        tokenizer = load_tokenizer(folder)
        check_fast(tokenizer, folder)
        return tokenizer

    def encode(self, data: TaskData, tokenizer, opts, model_config=None) -> tuple[dict[str, Split], dict]:
        measured = data.splits.get("train") or next(iter(data.splits.values()))  # eval: its one split
        length = choose_length(tokenizer, measured.rows, model_limit(model_config, tokenizer), opts.max_length)
        index = {n: i for i, n in enumerate(data.label_names)}
        splits = {}
        for name, rows in data.splits.items():
            tensors, meta = encode_rows(tokenizer, rows.rows, index, length)
            splits[name] = Split(name, tensors, rows.rows, {**meta, "label_names": list(data.label_names)})
        return splits, {"max_length": length}

    def task_loss(self) -> TokenClassificationLoss:
        return TokenClassificationLoss()

    def scores(self, outputs: dict, split: Split) -> dict:
        names = split.meta["label_names"]
        pred = word_predictions(np.asarray(outputs["logits"]), split.tensors["labels"].numpy())
        gold = [[r["tags"][w] for w in words] for r, words in zip(split.rows, split.meta["scored_words"])]
        found = entity_scores(gold, [[names[i] for i in p] for p in pred])
        return {**found, "words_not_scored": split.meta["words_not_scored"]}

    def metadata(self, report: dict, settings: dict) -> dict:
        return {**super().metadata(report, settings), "tokenizer": "tokenizer",
                "output": "logits [batch, sequence, num_labels]: argmax at a word's first sub-word indexes "
                          "label_names; other positions are not read"}
