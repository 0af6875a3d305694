"""What a pruning run measures on the models themselves (the numbers ``report.json`` holds).

- per-matrix density: the fraction of non-zero weights in every Plan slice of the *folded* model
  (masked weights are exact zeros after ``fold``), by layer and role (q/k/v/out/up/gate/down; the
  data of the paper's Figure 3);
- heads / neurons kept per layer: from the ``StripReport`` (``kept`` includes a zeroed placeholder
  granule when a whole family was removable; ``live`` does not);
- parameters and FLOPs of the dense and the slim model (``passes.measure``), accuracies in torch and
  onnxruntime, the majority-class rate.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from leap_fx.run.bootstrap import paired_bootstrap
from passes.measure import count_flops, count_params
from passes.analyze.plan import ATTENTION, EXPERTS, FEED_FORWARD

ROLES = ("q", "k", "v", "out", "up", "gate", "down")


# -- what pruning did ----------------------------------------------------------------------------
@torch.no_grad()
def matrix_densities(model: nn.Module, plan) -> list[dict]:
    """Non-zero fraction of every Plan slice of a folded (not yet stripped) model."""
    rows = []
    for fam in sorted(plan.families.values(), key=lambda f: (f.layer, f.kind)):
        for s in fam.slices:
            w = model.get_parameter(s.weight_name).detach().index_select(s.axis, torch.tensor(s.positions()))
            rows.append({"layer": fam.layer, "kind": fam.kind, "role": s.role, "family": fam.fqn,
                         "weight": s.weight_name, "numel": int(w.numel()),
                         "density": float((w != 0).sum()) / max(1, w.numel())})
    return rows


def overall_density(rows: list[dict]) -> float:
    """Element-weighted density over ``matrix_densities`` rows."""
    n = sum(r["numel"] for r in rows)
    return sum(r["density"] * r["numel"] for r in rows) / n if n else float("nan")


def kept_structure(strip_report, plan) -> dict[str, list[dict]]:
    """Heads and neurons per layer from a ``StripReport`` (``live`` excludes a zeroed placeholder); a
    mixture of experts adds ``experts`` (whole routed experts per layer) and each routed expert's neuron row
    names its ``expert``."""
    out: dict[str, list[dict]] = {"heads": [], "neurons": []}
    fams = strip_report.families if strip_report is not None else {}
    for key, fam in sorted(plan.families.items(), key=lambda kv: (kv[1].layer, kv[1].kind)):
        rec = fams.get(key)
        before = fam.granules
        kept = len(rec["kept"]) if rec else before
        live = kept - (1 if rec and rec.get("placeholder") is not None else 0)
        row = {"layer": fam.layer, "family": fam.fqn, "before": before, "kept": kept, "live": live}
        if fam.kind == FEED_FORWARD and fam.expert is not None:
            row["expert"] = fam.expert
        group = "heads" if fam.kind == ATTENTION else "experts" if fam.kind == EXPERTS else "neurons"
        out.setdefault(group, []).append(row)
    return out


def live_of_total(rows: list[dict]) -> str:
    """``"live/before"`` summed over the per-layer rows of ``kept_structure`` (e.g. ``"55/72"`` heads)."""
    return f"{sum(r['live'] for r in rows)}/{sum(r['before'] for r in rows)}"


def majority_rate(labels) -> float:
    """Accuracy of always predicting the most frequent label."""
    labels = [int(x) for x in labels]
    if not labels:
        return float("nan")
    return max(labels.count(v) for v in set(labels)) / len(labels)


def clear_margin(majority: float, n: int) -> float:
    """How far above the majority rate an accuracy must be to count as learned: two standard errors of
    an accuracy at that rate on ``n`` rows (``2 sqrt(m(1-m)/n)``), and at least 2 points."""
    return max(0.02, 2.0 * math.sqrt(max(majority * (1 - majority), 0.0) / max(1, n)))


def measure(slim: nn.Module, teacher: nn.Module, data, plan, flop_input: dict, onnx_path: str, *, task) -> dict:
    """Pruned accuracy (ONNX in onnxruntime, and PyTorch: the task handler's ``correct_onnx`` / ``score``), the
    change against the dense teacher on the same rows with its paired bootstrap interval, parameters and
    FLOPs of dense and slim."""
    splits = ("validation", "test")
    correct = {split: task.correct_onnx(onnx_path, getattr(data, split)) for split in splits}
    dense = {split: task.correct(teacher, getattr(data, split)) for split in splits}
    pruned = {"validation": float(correct["validation"].mean()), "test": float(correct["test"].mean()),
              "validation_torch": task.score(slim, data.validation)["accuracy"],
              "delta": {split: paired_bootstrap(dense[split], correct[split]) for split in splits}}
    dense_flops, slim_flops = count_flops(teacher, flop_input, plan), count_flops(slim, flop_input, plan)
    blocks = plan.blocks()
    params = {"dense": count_params(teacher), "slim": count_params(slim),
              "dense_encoder": count_params(teacher, blocks), "slim_encoder": count_params(slim, blocks)}
    return {"pruned": pruned, "parameters": {**params, "slim_fraction": params["slim"] / params["dense"]},
            "flops": {"batch": 1, "seq_len": int(flop_input["input_ids"].shape[1]) if "input_ids" in flop_input
                      else None, "dense_encoder": dense_flops["encoder"], "slim_encoder": slim_flops["encoder"],
                      "dense_total": dense_flops["total"], "slim_total": slim_flops["total"],
                      "slim_fraction": slim_flops["encoder"] / max(1, dense_flops["encoder"])}}
