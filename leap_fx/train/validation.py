"""Logits and accuracy of a torch model on a split (onnxruntime: ``leap_fx.run.evaluate``)."""
from __future__ import annotations

import torch
from torch import nn

from leap_fx.data.batches import as_tensors, lengths, model_inputs, trim
from leap_fx.objectives.outputs import logits_of
from leap_fx.objectives.task_loss import check_class_labels

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, data, batch_size: int = 128) -> torch.Tensor:
    """Logits of ``model`` on every example of ``data`` (in data order), in eval mode.

    Examples are run sorted by length (less padding after trimming) and put back in order.
    """
    tensors = as_tensors(data)
    lens = lengths(tensors)
    order = torch.argsort(lens, descending=True, stable=True) if lens is not None \
        else torch.arange(int(tensors["labels"].shape[0]))
    was_training = model.training
    model.eval()
    try:
        out = [logits_of(model(**model_inputs(trim({k: v[idx] for k, v in tensors.items()})))).float()
               for idx in order.split(batch_size)]
    finally:
        model.train(was_training)
    logits = torch.cat(out)
    result = torch.empty_like(logits)
    result[order] = logits
    return result


def evaluate(model: nn.Module, data, batch_size: int = 128) -> dict[str, float]:
    """Validation accuracy and cross-entropy."""
    labels = as_tensors(data)["labels"]
    logits = predict_logits(model, data, batch_size)
    check_class_labels(labels, logits.shape[-1])
    return {"val_accuracy": float((logits.argmax(-1) == labels).float().mean()),
            "val_loss": float(nn.functional.cross_entropy(logits, labels))}


def accuracy(model: torch.nn.Module, data, batch_size: int = 128) -> float:
    """Fraction of examples whose argmax logit equals the label."""
    labels = as_tensors(data)["labels"]
    return float((predict_logits(model, data, batch_size).argmax(-1) == labels).float().mean())
