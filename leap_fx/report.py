"""report.json: what a pruning run achieved, measured on the models themselves.

- per-matrix density: the fraction of non-zero weights in every Plan slice of the *folded* model
  (masked weights are exact zeros after ``fold``), by layer and role (q/k/v/out/up/gate/down; the
  data of the paper's Figure 3);
- heads / neurons kept per layer: from the strip summary (``kept`` includes a zeroed placeholder
  granule when a whole family was removable; ``live`` does not);
- parameters and FLOPs of the dense and the slim model. FLOPs are counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass (batch 1, eager attention so
  the attention matmuls count); "encoder" FLOPs are those of the transformer blocks (the modules
  enclosing each layer's families).

Files are written atomically (temporary file in the same directory, then ``os.replace``).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Iterable, Optional

import torch
from torch import nn

ROLES = ("q", "k", "v", "out", "up", "gate", "down")


# -- atomic files --------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str):
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, else removed."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj: Any) -> str:
    """JSON with indent 2, written atomically; returns ``path``."""
    text = json.dumps(obj, indent=2, default=_jsonable) + "\n"
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
    return path


def _jsonable(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_history(path: str) -> list[dict]:
    """Records of a ``history.jsonl`` written by ``leap_fx.train.train`` (empty if missing)."""
    if not os.path.isfile(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


# -- counting ------------------------------------------------------------------------------------
def count_params(model: nn.Module, prefixes: Optional[Iterable[str]] = None) -> int:
    """Parameters (tied tensors once); only those under ``prefixes`` (module FQNs) when given."""
    seen, total = set(), 0
    prefixes = tuple(prefixes) if prefixes is not None else None
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        if prefixes is not None and not any(name == q or name.startswith(q + ".") for q in prefixes):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def blocks(plan) -> list[str]:
    """The transformer blocks: per layer, the lowest common module of its families (outermost kept)."""
    by_layer: dict[int, list[list[str]]] = {}
    for fam in plan.families.values():
        by_layer.setdefault(fam.layer, []).append(fam.fqn.split(".") if fam.fqn else [])
    found = []
    for parts in by_layer.values():
        common = parts[0]
        for p in parts[1:]:
            n = 0
            while n < min(len(common), len(p)) and common[n] == p[n]:
                n += 1
            common = common[:n]
        found.append(".".join(common))
    found = sorted(set(found))
    if "" in found:
        return [""]
    return [b for b in found if not any(b != o and b.startswith(o + ".") for o in found)]


@contextmanager
def eager_attention(model: nn.Module):
    """Switch an HF model to eager attention (so FlopCounterMode sees the attention matmuls)."""
    setter = getattr(model, "set_attn_implementation", None)
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switched = False
    if callable(setter) and previous not in (None, "eager"):
        try:
            setter("eager")
            switched = True
        except (ValueError, AttributeError, NotImplementedError):
            switched = False
    try:
        yield
    finally:
        if switched:
            setter(previous)


def count_flops(model: nn.Module, example_inputs: Any, plan=None) -> dict[str, int]:
    """FLOPs of one forward on ``example_inputs``: ``total`` and ``encoder`` (blocks of ``plan``)."""
    from torch.utils.flop_counter import FlopCounterMode

    args, kwargs = ((), dict(example_inputs)) if isinstance(example_inputs, dict) else \
        ((tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)), {})
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), torch.no_grad(), counter:
            model(*args, **kwargs)
    finally:
        model.train(was_training)
    total = int(counter.get_total_flops())
    out = {"total": total, "encoder": total}
    if plan is not None:
        counts = counter.get_flop_counts()
        root = type(model).__name__
        names = blocks(plan)
        if names != [""]:
            out["encoder"] = int(sum(sum(counts.get(f"{root}.{b}", {}).values()) for b in names))
    return out


# -- what pruning did ----------------------------------------------------------------------------
@torch.no_grad()
def matrix_densities(model: nn.Module, plan) -> list[dict]:
    """Non-zero fraction of every Plan slice of a folded (not yet stripped) model."""
    rows = []
    for fam in sorted(plan.families.values(), key=lambda f: (f.layer, f.kind)):
        for s in fam.slices:
            w = model.get_parameter(s.weight_name).detach().narrow(s.axis, s.start, s.size)
            rows.append({"layer": fam.layer, "kind": fam.kind, "role": s.role, "family": fam.fqn,
                         "weight": s.weight_name, "numel": int(w.numel()),
                         "density": float((w != 0).sum()) / max(1, w.numel())})
    return rows


def overall_density(rows: list[dict]) -> float:
    """Element-weighted density over ``matrix_densities`` rows."""
    n = sum(r["numel"] for r in rows)
    return sum(r["density"] * r["numel"] for r in rows) / n if n else float("nan")


def kept_structure(summary, plan) -> dict[str, list[dict]]:
    """Heads and neurons per layer from a ``StripSummary`` (``live`` excludes a zeroed placeholder)."""
    out: dict[str, list[dict]] = {"heads": [], "neurons": []}
    fams = summary.families if summary is not None else {}
    for fqn, fam in sorted(plan.families.items(), key=lambda kv: (kv[1].layer, kv[1].kind)):
        rec = fams.get(fam.fqn)
        before = fam.granules
        kept = len(rec["kept"]) if rec else before
        live = kept - (1 if rec and rec.get("placeholder") is not None else 0)
        row = {"layer": fam.layer, "family": fam.fqn, "before": before, "kept": kept, "live": live}
        out["heads" if fam.kind == "attention" else "neurons"].append(row)
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


# -- printing ------------------------------------------------------------------------------------
def _fmt(x, spec=".4f"):
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def summary_table(report: dict) -> str:
    """A readable multi-line summary of ``report`` (what ``leap-fx prune`` prints at the end)."""
    acc, dens = report.get("accuracy", {}), report.get("density", {})
    par, fl = report.get("parameters", {}), report.get("flops", {})
    onnx, st = report.get("onnx", {}), report.get("structure", {})
    dense, pruned = acc.get("dense", {}), acc.get("pruned", {})
    heads = st.get("heads", [])
    neurons = st.get("neurons", [])
    rows = [
        ("method / granularity", f"{report.get('options', {}).get('method')} / "
                                 f"{report.get('options', {}).get('granularity')}"),
        ("target density", _fmt(dens.get("target"), ".3f")),
        ("achieved density", _fmt(dens.get("achieved"), ".4f") + "  (" + ", ".join(
            f"{k} {v:.3f}" for k, v in dens.get("by_kind", {}).items()) + ")"),
        ("validation acc dense -> pruned", f"{_fmt(dense.get('validation'))} -> "
                                           f"{_fmt(pruned.get('validation'))}"),
        ("test acc dense -> pruned (ORT)", f"{_fmt(dense.get('test'))} -> {_fmt(pruned.get('test'))}"
                                          f"  (majority {_fmt(report.get('data', {}).get('majority_test'))})"),
        ("heads kept", f"{live_of_total(heads)}  per layer " + " ".join(str(h["live"]) for h in heads)),
        ("neurons kept", f"{live_of_total(neurons)}  per layer " + " ".join(str(n["live"]) for n in neurons)),
        ("parameters dense -> slim", f"{par.get('dense')} -> {par.get('slim')}"),
        ("encoder FLOPs dense -> slim", f"{fl.get('dense_encoder')} -> {fl.get('slim_encoder')}"
                                        f"  ({_fmt(fl.get('slim_fraction'), '.3f')} at seq {fl.get('seq_len')})"),
        ("ONNX", f"{onnx.get('path')}  (parity {_fmt(onnx.get('parity_max_abs_diff'), '.2e')})"),
        ("wall time", f"{_fmt(report.get('timing', {}).get('total_s'), '.1f')} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
