"""Objectives a method owns, below the methods: ``outputs.py`` (``Outputs``, ``logits_of``) ->
``tapping.py`` (what a forward captures: block outputs, embeddings, attention scores) -> ``task_loss.py``
(what a task's outputs mean: its loss and its distillation target) -> ``logit_kd.py``
(LEAP Eq. 8) -> ``layer_kd.py`` (hidden-state MSE) -> ``tinybert.py`` (SparseBERT's TinyBERT KD) ->
``layer_match.py`` (CoFi's learned layer map and re-chosen matches)."""
from leap_fx.objectives.layer_kd import LayerKD
from leap_fx.objectives.layer_match import MatchedLayerKD
from leap_fx.objectives.logit_kd import LogitKD, kd_loss
from leap_fx.objectives.outputs import Outputs, logits_of
from leap_fx.objectives.tapping import (
           TAPS,
           capture,
           capture_inputs,
           capture_scores,
           recording,
           same_layout,
           taps,
)
from leap_fx.objectives.task_loss import (
           ClassificationLoss,
           TaskLoss,
           check_class_labels,
           kl_divergence,
)
from leap_fx.objectives.tinybert import TinyBertKD

__all__ = ["LayerKD", "MatchedLayerKD", "LogitKD", "kd_loss", "ClassificationLoss", "TaskLoss", "check_class_labels", "kl_divergence", "Outputs", "logits_of", "TAPS", "capture",
           "capture_inputs", "capture_scores", "recording", "same_layout", "taps", "TinyBertKD"]
