"""The sequence-classification task's hooks, called by the classification job (``leap_fx.run.job``).

- ``read(opts)``: the named dataset or the user's files, split and subsampled (``leap_fx.data.load_data``);
  ``tokenize(data, tokenizer, max_length)``: every split, once;
- ``task_loss()``: ``ClassificationLoss`` (cross-entropy on ``labels``; logit distillation);
- ``score`` / ``score_onnx``: accuracy in torch and onnxruntime; ``evaluate``: the loop's validation
  accuracy and loss;
- ``example_inputs`` / ``flop_inputs``: the first rows (trimmed) / one row at the full length;
- ``export``: ``logits [batch, num_labels]`` from ``input_ids``, ``attention_mask`` (``token_type_ids``);
  ``metadata``: what ``model.onnx`` carries (label names, max length, tokenizer, text pair, data options,
  what pruning achieved).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from leap_fx.data.batches import as_tensors, iterate_batches, model_inputs
from leap_fx.data.splits import load_data
from leap_fx.env.version import VERSION
from leap_fx.objectives.outputs import logits_of
from leap_fx.objectives.task_loss import ClassificationLoss, check_class_labels
from leap_fx.tasks.predict import onnx_outputs, torch_outputs
from leap_fx.tasks.registry import register_task
from leap_fx.tasks.sequence_classification.config import SequenceClassificationConfig
from passes.export import export_onnx

__all__ = ["SequenceClassification", "DATA_OPTIONS", "FILE_OPTIONS"]

DATA_OPTIONS = ("data", "validation_data", "test_data", "text_column", "text_pair_column", "label_column",
                "split_seed", "max_train_examples", "max_eval_examples", "drop_invalid", "tsv_quotes",
                "allow_many_classes")
FILE_OPTIONS = ("data", "validation_data", "test_data")


@register_task(SequenceClassificationConfig)
class SequenceClassification:
    """Texts (or pairs) -> a label (module docstring)."""

    output_names = ("logits",)

    def __init__(self, config: SequenceClassificationConfig):
        self.config = config

    def read(self, opts, allow_many_classes: bool = False):
        return load_data(opts, allow_many_classes)

    def tokenize(self, data, tokenizer, max_length: int):
        return data.tokenize(tokenizer, max_length)

    def task_loss(self) -> ClassificationLoss:
        return ClassificationLoss()

    def outputs(self, out) -> dict:
        return {"logits": logits_of(out)}

    def correct(self, model, split, batch_size: int = 128) -> np.ndarray:
        """Per-row 0/1 (data order): the model's argmax equals the label."""
        logits = torch_outputs(model, as_tensors(split), self.outputs, False, batch_size)["logits"]
        return np.asarray(logits).argmax(-1) == as_tensors(split)["labels"].numpy()

    def correct_onnx(self, path, split, batch_size: int = 64) -> np.ndarray:
        """Per-row 0/1 of an ONNX file (or session) in onnxruntime."""
        logits = onnx_outputs(path, as_tensors(split), self.output_names, batch_size)["logits"]
        return np.asarray(logits).argmax(-1) == as_tensors(split)["labels"].numpy()

    def score(self, model, split, batch_size: int = 128) -> dict:
        return {"accuracy": float(self.correct(model, split, batch_size).mean())}

    def score_onnx(self, path, split, batch_size: int = 64) -> dict:
        return {"accuracy": float(self.correct_onnx(path, split, batch_size).mean())}

    def evaluate(self, model, split, batch_size: int = 128) -> dict:
        """The loop's validation metrics: accuracy and cross-entropy."""
        tensors = as_tensors(split)
        logits = torch.from_numpy(torch_outputs(model, tensors, self.outputs, False, batch_size)["logits"])
        check_class_labels(tensors["labels"], logits.shape[-1])
        return {"val_accuracy": float((logits.argmax(-1) == tensors["labels"]).float().mean()),
                "val_loss": float(F.cross_entropy(logits, tensors["labels"]))}

    def example_inputs(self, split, n: int = 2) -> dict:
        return model_inputs(next(iterate_batches(split, n)))

    def flop_inputs(self, split) -> dict:
        return {k: v[:1].clone() for k, v in as_tensors(split).items() if k != "labels"}

    def export(self, model, example: dict, path: str, atol: float = 1e-4):
        return export_onnx(model, example, path, atol=atol, output_name="logits", output_axes={0: "batch"})

    def metadata(self, report: dict, tokenizer: str = "tokenizer", tokenizer_class: Optional[str] = None) -> dict:
        """What ``model.onnx`` carries (``passes.export.metadata``). ``tokenizer``: the tokenizer directory,
        relative to the ONNX file's folder (or absolute). Data file options are made absolute."""
        opts = report["resolved_options"]
        data = {k: opts.get(k) for k in DATA_OPTIONS}
        for k in FILE_OPTIONS:
            if data[k] and os.path.isfile(data[k]):
                data[k] = os.path.abspath(data[k])
        dens, flops, onnx = report.get("density", {}), report.get("flops", {}), report.get("onnx", {})
        return {
            "producer": "leap-fx", "leap_fx_version": VERSION, "task": "text-classification",
            "output": "logits [batch, num_labels]: argmax indexes label_names; softmax gives probabilities",
            "label_names": list(report["data"]["label_names"]), "max_length": opts.get("max_length"),
            "tokenizer": tokenizer, "tokenizer_class": tokenizer_class,
            "model_source": report.get("model", {}).get("source"),
            "text_pair": opts.get("text_pair_column") is not None, "data_options": data,
            "method": opts.get("method"), "granularity": opts.get("granularity"),
            "target_density": dens.get("target"), "achieved_density": dens.get("achieved"),
            "flops_fraction": flops.get("slim_fraction"), "flops_seq_len": flops.get("seq_len"),
            "encoder_flops_dense": flops.get("dense_encoder"), "encoder_flops_slim": flops.get("slim_encoder"),
            "parity_max_abs_diff": onnx.get("parity_max_abs_diff"),
            "test_accuracy": report.get("accuracy", {}).get("pruned", {}).get("test"),
        }


