"""Kwon et al., *A Fast Post-Training Pruning Framework for Transformers*: one-shot, no retraining.

Given a fine-tuned model, a cost budget and ~2K sample examples (the job passes up to 2,048 training
examples), ``calibrate`` runs the paper's four steps on every head and FFN neuron of the Plan:

1. **Fisher** (``kwon_fisher.py``): per-example gradients ``g_i = dL_i/dm`` of the task loss w.r.t.
   mask variables ``m = 1`` (a multiplier on each head's context output / neuron's activation);
   importance ``I_jj = 1/N sum_i g_ij^2``; loss estimate of pruning P: ``1/(2N) ||sum_{j in P} g_j||^2``.
2. **Search** (``kwon_search.py``): for every head count, the most important heads plus the most
   important neurons that fit the rest of the budget; the pair with the largest kept importance.
3. **Rearrangement** (``kwon_search.py``): per family, greedy swaps under the full within-layer Fisher.
4. **Tuning** (``kwon_tune.py``): per family in forward order, least-squares scales of the kept heads /
   neurons reconstructing the unpruned model's sub-layer output on the token rows that reach the model's
   output ([CLS] only in a classifier's last layer); folded into the out / down columns.

The budget: the config's target from ``leap_fx.costs`` (``flops:`` = fraction of the heads' and FFNs'
forward FLOPs, the paper's MAC constraint, at ``cost_seq`` tokens (the job sets the run's length;
unset, the sample data's mean length, the paper's choice); ``density:`` = fraction of the governed
weights, like every MaskSpec). Kwon's search needs linear costs, so latency targets are refused.

Deviations (CPU, any architecture; each module says more): per-example gradients come from one batched,
length-sorted pass (exact; the carrier's autograd one example at a time where an output op cannot be
split per example); mask tuning reads ``tune_examples`` (default 512) of the samples where the reference
code uses all 2K: on 2 CPU cores the tuning forwards would otherwise cost as much as the Fisher pass
(the least-squares problems stay heavily over-determined: ~14K tokens x hidden equations for <= 1.5K
unknowns; all 1,600 quick-mode samples gave a validation KL of 0.0198 vs 0.0203); a rejected
tuning leaves that family at 1 and continues; ``nn.MultiheadAttention`` heads are
searched and rearranged but not tuned. In the job the FLOPs are counted at the run's padded length, as
for every method (the paper uses the mean length, where the S^2 attention terms weigh a little less).

The "teacher" is the model itself with every mask at 1 (the paper's unpruned model;
``tune_teacher="intermediate"``: the reference code's less pruned searched mask); the job's
``teacher`` argument is not needed. ``stop_after`` ends after ``search`` or ``rearrange`` (the bench
measures each step's share). Masks are ``KwonMask`` owners (real-valued ``FixedMask``): ``fold``
bakes the scales into the out / down columns exactly, ``strip`` removes the zeroed granules.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from typing import Optional

import torch

from leap_fx.costs import target_costs
from leap_fx.data.batches import model_inputs
from leap_fx.masks.owner import FixedMask
from leap_fx.masks.lifecycle import owners
from leap_fx.methods.base import OneShotMethod
from leap_fx.methods.gqa import gqa_realisable
from leap_fx.methods.kwon.batches import batch_size, by_length, first_examples
from leap_fx.methods.kwon.capture import output_slice
from leap_fx.methods.kwon.config import KwonConfig
from leap_fx.methods.expert_widths import equal_widths, removed_keys
from leap_fx.methods.kwon.experts import choose_experts, scaled_costs, within_budget
from leap_fx.methods.kwon.fisher import MaskGrads, forward_loss, mask_gradients
from leap_fx.methods.kwon.search import kept_cost, rearrange, search
from leap_fx.methods.kwon.tune import Targets, teacher_targets, tune
from leap_fx.methods.registry import register
from passes.analyze.plan import EXPERTS
from passes.strip.routing import excluded_experts

__all__ = ["Kwon", "KwonMask", "mean_tokens", "rows_per_example"]

TUNE_BATCH = 32  # examples per forward of mask tuning (re-grouped by length)


class KwonMask(FixedMask):
    """A ``FixedMask`` that is never "binary": at value 1 a ``FixedMask`` counts as 0/1 and the carrier
    would multiply q/k/v/up/gate by it too, so ``dL/dm`` would not be the head-output multiplier's
    gradient. Here only out / down carry the value; the others are gated by its support."""

    @property
    def binary(self) -> bool:  # type: ignore[override]
        return False


def mean_tokens(batches: list[dict]) -> Optional[float]:
    """Mean non-padding tokens per example (None without a 2-D attention mask)."""
    masks = [b["attention_mask"] for b in batches
             if isinstance(b.get("attention_mask"), torch.Tensor) and b["attention_mask"].dim() == 2]
    if not masks:
        return None
    return float(sum(m.sum() for m in masks)) / sum(m.shape[0] for m in masks)


def rows_per_example(model, plan, batch: dict) -> float:
    """Token rows per example at the first attention / feed-forward output op (models without a 2-D
    attention mask: patches + class token of a ViT, frames of audio), read by a forward hook; works before
    any mask is installed."""
    fam = next((f for f in plan.families.values() if f.kind in ("attention", "ffn")
                and output_slice(f).expert is None), None)
    if fam is None:
        return 1.0
    seen: list = []
    hook = model.get_submodule(output_slice(fam).fqn).register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            model(**model_inputs(batch))
    finally:
        hook.remove()
    y = seen[0] if seen and torch.is_tensor(seen[0]) else None
    return y.numel() / y.shape[-1] / batch_size(batch) if y is not None else 1.0


def _unpruned(importance, cost, kinds, fraction, total) -> dict:
    return {}


def _intermediate(importance, cost, kinds, fraction, total) -> dict:
    return search(importance, cost, kinds, math.sqrt(fraction) * total)


TEACHERS = {"unpruned": _unpruned, "intermediate": _intermediate}  # tune_teacher -> teacher's keep grids


@register(KwonConfig)
class Kwon(OneShotMethod):
    def make_owner(self, shape, key, device=None) -> KwonMask:
        return KwonMask(shape, key=key, device=device)

    def prepare(self, model, plan):
        if plan is None:
            raise ValueError("kwon needs a Plan: plan = leap_fx.analyze(model, example_inputs)")
        super().prepare(model, plan)
        self.plan = plan

    def tied(self, model) -> dict[str, KwonMask]:
        """The heads' and neurons' owners (whole experts are chosen apart: ``kwon/experts.py``)."""
        fams = self.plan.families
        return {k: o for k, o in owners(model).items() if k in fams and fams[k].kind != EXPERTS}

    def fisher(self, model, batches: list[dict], loss=None, model_loss=None) -> MaskGrads:
        """Step 1 (every mask at 1): per-example mask gradients on ``batches``."""
        for o in owners(model).values():
            o.set(torch.ones(o.grid_shape))
        return mask_gradients(model, self.plan, self.tied(model), batches, loss or self.task_loss.summed,
                              int(self.config.fisher_batch), model_loss=model_loss)

    def budget(self, model, batches: list[dict], removed: Optional[dict] = None) -> tuple[dict, float, dict, float]:
        """The search's inputs: per-granule cost of every family (the removed experts' neurons left out, the
        remaining experts' scaled: ``kwon/experts.py``), the total, each family's kind, and the tokens per
        example the FLOPs costs use (every mask is set to 1)."""
        for o in owners(model).values():
            o.set(torch.ones(o.grid_shape))
        tied = self.tied(model)
        seq = self.config.cost_seq or mean_tokens(batches) or rows_per_example(model, self.plan, batches[0])
        costs = target_costs(self.config, model, self.plan, seq=seq)
        cost = scaled_costs({k: float(costs.marginal(k, 0)) for k in tied}, self.plan, removed or {})
        total = sum(cost[k] * tied[k].granules for k in cost)
        return cost, total, {k: self.plan.families[k].kind for k in cost}, seq

    def tune_targets(self, model, batches, importance, cost, kinds, total) -> tuple[Targets, dict]:
        """Step 4's teacher (``tune_teacher``) set on the masks, its sub-layer outputs on ``batches``,
        and what it keeps (``achieved``: its fraction of the cost)."""
        tied, fraction = self.tied(model), self.config.goal.value
        keep = TEACHERS[self.config.tune_teacher](importance, cost, kinds, fraction, total)
        keep = {k: keep.get(k, torch.ones(o.grid_shape) if k in cost else torch.zeros(o.grid_shape))
                for k, o in tied.items()}  # not in cost: a removed expert's neurons
        for k, o in tied.items():
            o.set(keep[k])
        keep = {k: v for k, v in keep.items() if k in cost}
        targets = teacher_targets(model, self.plan, batches, self.config.fit_rows == "reaching")
        return targets, {"kind": self.config.tune_teacher, "achieved": kept_cost(keep, cost) / total}

    def calibrate(self, model, batches, teacher=None, loss=None, fisher: Optional[MaskGrads] = None,
                  model_loss=None) -> dict:
        """Steps 1-4 on ``batches`` (dicts of inputs + ``labels``; ``loss(outputs, batch)`` or
        ``model_loss(model, batch)`` (running the forward itself), each summed over the batch's examples,
        replaces the task loss); ``fisher`` reuses step 1 of an earlier call on the same model."""
        batches, seconds = list(batches or ()), {}
        if not batches:
            raise ValueError("kwon needs sample batches (dicts of model inputs + labels): the paper uses ~2K "
                             "training examples")
        with _timed(seconds, "experts"):
            removed, scores = choose_experts(model, self.plan, first_examples(batches, self.config.expert_examples),
                                             forward_loss(loss, model_loss), float(self.config.experts))
        with excluded_experts(model, self.plan, removed):
            report = self._steps(model, batches, loss, fisher, model_loss, removed, seconds)
        gone = removed_keys(self.plan, removed)
        for k, o in owners(model).items():  # the removed experts: router row, fused slices and neurons at 0
            if k in removed:
                o.set(torch.tensor([0.0 if e in removed[k] else 1.0 for e in range(o.granules)]))
            elif k in gone:
                o.set(torch.zeros(o.grid_shape))
        if removed:
            report["experts"] = {"removed": removed, "loss_rise": scores, "examples": self.config.expert_examples}
        return report

    def _steps(self, model, batches, loss, fisher, model_loss, removed: dict, seconds: dict) -> dict:
        """Steps 1-4 (with ``removed`` experts out of routing and out of the search)."""
        cfg = self.config
        with _timed(seconds, "fisher"):
            grads = fisher if fisher is not None else self.fisher(model, batches, loss, model_loss)
        (kind, fraction), tied = (cfg.goal.unit, cfg.goal.value), self.tied(model)
        cost, total, kinds, seq = self.budget(model, batches, removed)
        importance = {k: v for k, v in grads.diagonal().items() if k in cost}
        if not any(bool(v.any()) for v in importance.values()):
            warnings.warn("kwon: every mask gradient is zero (the loss does not depend on the heads / neurons?): "
                          "the search keeps an arbitrary set", stacklevel=2)
        with _timed(seconds, "search"):
            keep = gqa_realisable(search(importance, cost, kinds, fraction * total), importance, self.plan)
            keep = within_budget(equal_widths(model, keep, importance, self.plan, removed), importance, cost,
                                 fraction * total, self.plan)
        tune_batches = by_length(first_examples(batches, int(cfg.tune_examples)), TUNE_BATCH)[0]
        with _timed(seconds, "targets"):
            targets, teacher = self.tune_targets(model, tune_batches, importance, cost, kinds, total) \
                if cfg.stop_after == "tune" else (None, None)
        report = {"target": {"kind": kind, "fraction": fraction}, "seq_len": seq, "examples": grads.examples,
                  "fisher_path": grads.path, "fisher_loss": {"search": grads.loss(keep)}, "stop_after": cfg.stop_after}
        if cfg.stop_after != "search":
            with _timed(seconds, "rearrange"):
                keep = gqa_realisable({k: rearrange(grads.grads[k], v) for k, v in keep.items()}, importance,
                                      self.plan)
            report["fisher_loss"]["rearranged"] = grads.loss(keep)
        for k, o in tied.items():  # the removed experts' neurons (not searched): 0
            o.set(keep.get(k, torch.zeros(o.grid_shape)))
        if targets is not None:
            with _timed(seconds, "tune"):
                fits = tune(model, self.plan, tied, tune_batches, targets, cfg.damping, cfg.scale_bound)
            report.update(tuning=[f.to_dict() for f in fits], tune_examples=sum(batch_size(b) for b in tune_batches),
                          tune_teacher=teacher, fit_rows=cfg.fit_rows)
            if fits and not any(f.status == "tuned" for f in fits):
                warnings.warn("kwon: mask tuning changed no family (all rejected or skipped, see the report's "
                              "'tuning'): the result is the searched mask alone", stacklevel=2)
        report.update(achieved=kept_cost(keep, cost) / total, kept={k: int(v.sum()) for k, v in keep.items()},
                      seconds=seconds)
        return report


@contextmanager
def _timed(seconds: dict, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = round(time.perf_counter() - t0, 2)
