"""Latency lookup table: what a head and a neuron cost in onnxruntime on *this* machine.

Kwon et al. (*A Fast Post-Training Pruning Framework for Transformers*) time one layer's attention with
``h`` heads and its FFN with ``n`` neurons on the target GPU and fit a piecewise-linear function of
``h`` / ``n``. Here, on CPU with onnxruntime: the model is stripped to the same kept count in every
layer (heads only, then neurons only) for a few fractions (``GRID``), each graph is exported
(parity-checked) and timed interleaved with the dense graph, at the run's batch and sequence length.
Layers adding up (Kwon's assumption), ``T(h heads per layer) - T(1 head) = L (A(h) - A(1))``: the
per-layer curves ``A`` (heads) and ``B`` (neurons) are those differences over ``L``, piecewise-linear
through the grid points (made monotone), and ``fixed = T_dense - L A(H) - L B(N)`` is what no head or
neuron removes (embeddings, LayerNorm, residual adds, the classifier). Every graph's time is the dense
time of the whole table divided by its paired speedup over the dense graph timed in the same rounds,
so slow phases of a shared machine cancel.

Cached per model shape (parameter shapes and Plan), batch, sequence, threads and machine (host, CPU,
onnxruntime version): in memory and at ``<cache>/latency/<key>.json`` (``$LEAP_FX_CACHE`` or
``~/.cache/leap-fx``). The file records the SHA-256 of the table; a cached file is used only if it passes
the checksum and was measured for this key, shape (batch, sequence, threads, layers of the Plan) and
machine. Any other (damaged, edited, copied from another shape or machine, from an older leap-fx) is
measured again, with a warning naming it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Optional

from torch import nn
from torch.nn.utils import parametrize

from leap_fx.costs.model import CostModel, PiecewiseLinear
from leap_fx.costs.timing import inputs_at, onnx_latency
from leap_fx.env.cache import cache_path
from leap_fx.masks.lifecycle import carriers, zero_granules
from passes.export import export_onnx
from passes.io import JsonDataclass, read_json, write_json
from passes.strip import strip

GRID = (0.0, 0.25, 0.5, 0.75)  # kept fractions per layer (count max(1, round(f G))), besides dense
REPS = (2, 15)                 # (warmup, repetitions) of each interleaved group
_MEMO: dict[str, "LatencyTable"] = {}


@dataclass
class LatencyTable(JsonDataclass):
    """Measured latency model (milliseconds); ``curves[kind]``: per-layer ``[[kept fraction, ms], ...]``."""

    key: str
    batch: int
    seq: int
    threads: int
    dense_ms: float
    fixed_ms: float
    layers: dict = field(default_factory=dict)    # kind -> families of that kind
    curves: dict = field(default_factory=dict)    # kind -> [[fraction, ms], ...] (A, B of the docstring)
    measured: dict = field(default_factory=dict)  # graph name -> ms (dense-normalised)
    machine: dict = field(default_factory=dict)

    def curve(self, kind: str, granules: int) -> PiecewiseLinear:
        """A family's cost (ms) of ``n`` kept granules."""
        pts = self.curves.get(kind) or []
        if len(pts) < 2:  # one granule per layer: nothing to remove, nothing to cost
            return PiecewiseLinear((0.0, float(granules)), (0.0, 0.0))
        return PiecewiseLinear(tuple(x * granules for x, _ in pts), tuple(y for _, y in pts))

    def cost_model(self, plan, masked) -> CostModel:
        """Latency ``CostModel`` over the families in ``masked`` (the others are part of ``fixed``)."""
        curves, granules, fixed = {}, {}, self.fixed_ms
        for fam in plan.families.values():
            c = self.curve(fam.kind, fam.granules)
            if fam.fqn in masked:
                curves[fam.fqn], granules[fam.fqn] = c, fam.granules
            else:
                fixed += float(c(fam.granules))
        return CostModel("latency", curves, granules, fixed,
                         info={"batch": self.batch, "seq": self.seq, "threads": self.threads, "key": self.key,
                               "dense_ms": self.dense_ms, "fixed_ms": self.fixed_ms})


def machine() -> dict:
    import onnxruntime  # import weight: only when a table is measured or keyed
    return {"node": platform.node(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__}


def table_key(model: nn.Module, plan, batch: int, seq: int, threads: int) -> str:
    """Model shape (masks ignored) + plan + batch / seq / threads + machine -> cache key."""
    shapes = []
    for name, p in model.named_parameters():
        if ".parametrizations." in name and not name.endswith(".original"):
            continue  # mask state
        shapes.append((re.sub(r"\.parametrizations\.(\w+)\.original$", r".\1", name), list(p.shape)))
    blob = json.dumps({"class": type(model).__name__, "shapes": sorted(shapes), "plan": plan.to_dict(),
                       "batch": batch, "seq": seq, "threads": threads, "machine": machine()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def dense_copy(model: nn.Module) -> nn.Module:
    """A copy with every mask removed (original weights), in eval mode."""
    clone = copy.deepcopy(model)
    for _, mod, pname, _ in list(carriers(clone)):
        parametrize.remove_parametrizations(mod, pname, leave_parametrized=False)
    return clone.eval()


def _layers(plan) -> dict[str, int]:
    """Families of each kind in the Plan (the layers a curve is divided over)."""
    kinds = [f.kind for f in plan.families.values()]
    return {k: kinds.count(k) for k in sorted(set(kinds))}


def grid_counts(granules: int) -> list[int]:
    """Kept counts timed for a family of ``granules`` (the dense count is the reference, not listed)."""
    return sorted({max(1, round(f * granules)) for f in GRID} - {granules})


def _graphs(dense: nn.Module, plan, example, tmp: str) -> dict[str, dict[str, str]]:
    """Export the uniformly stripped graphs: ``{kind: {name: path}}`` (``name`` = kept fraction)."""
    groups: dict[str, dict[str, str]] = {}
    for kind in sorted({f.kind for f in plan.families.values()}):
        fams = [f for f in plan.families.values() if f.kind == kind]
        for count in grid_counts(fams[0].granules):
            frac = count / fams[0].granules
            keep = {f.fqn: list(range(max(1, round(frac * f.granules)))) for f in fams}
            slim = zero_granules(copy.deepcopy(dense), plan, keep)
            strip(slim, plan, example)
            path = os.path.join(tmp, f"{kind}-{count}.onnx")
            export_onnx(slim, example, path)
            groups.setdefault(kind, {})[f"{frac:.6f}"] = path
    return groups


def _fit(points: list[tuple[float, float]]) -> list[list[float]]:
    """Monotone (running max) piecewise-linear points, shifted so the smallest kept count costs 0."""
    pts = sorted(points)
    out, top = [], float("-inf")
    for x, y in pts:
        top = max(top, y)
        out.append([x, top])
    base = out[0][1]
    return [[x, y - base] for x, y in out]


def measure(model: nn.Module, plan, example, batch: int, seq: int, threads: int = 2, reps=REPS,
            verbose: bool = False) -> LatencyTable:
    """Build the table (see the module docstring); a few graphs exported and timed."""
    dense = dense_copy(model)
    inputs = inputs_at(example, batch, seq)
    layers = _layers(plan)
    with tempfile.TemporaryDirectory(prefix="leapfx-latency-") as tmp:
        groups = _graphs(dense, plan, example, tmp)
        if verbose:
            print(f"[leap-fx] latency table: timing {sum(map(len, groups.values()))} stripped graphs against "
                  f"dense at batch {batch}, seq {seq}, {threads} threads (cached for this model and machine)",
                  flush=True)
        dense_path = export_onnx(dense, example, os.path.join(tmp, "dense.onnx")).path
        timed = {k: onnx_latency({"dense": dense_path, **g}, inputs, reps[1], reps[0], threads, desc=f"latency {k}")
                 for k, g in groups.items()}
    dense_ms = sum(t["ms"]["dense"]["median"] for t in timed.values()) / max(1, len(timed))
    measured, curves = {"dense": dense_ms}, {}
    for kind, t in timed.items():
        pts = [(float(name), dense_ms / sp["paired"]) for name, sp in t["speedup"].items()] + [(1.0, dense_ms)]
        measured.update({f"{kind}@{x:.3f}": ms for x, ms in pts})
        curves[kind] = [[x, y / layers[kind]] for x, y in _fit(pts)]
    fixed = dense_ms - sum(layers[k] * curves[k][-1][1] for k in curves)
    return LatencyTable(key=table_key(model, plan, batch, seq, threads), batch=batch, seq=seq, threads=threads,
                        dense_ms=dense_ms, fixed_ms=max(0.0, fixed), layers=layers, curves=curves,
                        measured=measured, machine=machine())


def _cache_file(key: str, cache_dir: Optional[str]) -> str:
    return os.path.join(cache_path("latency", cache_dir), f"{key}.json")


FORMAT = "leap-fx-latency-table"


def _digest(table: dict) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def write_table(path: str, table: LatencyTable) -> None:
    """The table with its SHA-256 (checked by ``read_table``), written atomically."""
    body = table.to_dict()
    write_json(path, {"format": FORMAT, "sha256": _digest(body), "table": body})


def read_table(path: str, key: str, plan, batch: int, seq: int, threads: int) -> tuple[Optional[LatencyTable], str]:
    """``(table, "")`` if the cached file at ``path`` is intact and was measured for exactly this key, shape
    and machine; else ``(None, why not)``."""
    try:
        rec = read_json(path, "latency table")
    except ValueError as err:
        return None, str(err)
    body = rec.get("table") if isinstance(rec, dict) and rec.get("format") == FORMAT else None
    if not isinstance(body, dict):
        return None, "it is not a checksummed leap-fx latency table (written by an older leap-fx?)"
    if rec.get("sha256") != _digest(body):
        return None, "its contents fail the recorded SHA-256 (damaged or edited)"
    try:
        table = LatencyTable.from_dict(body)
    except (ValueError, TypeError) as err:
        return None, f"it cannot be read ({err})"
    want = {"key": key, "batch": batch, "seq": seq, "threads": threads, "layers": _layers(plan), "machine": machine()}
    have = {"key": table.key, "batch": table.batch, "seq": table.seq, "threads": table.threads,
            "layers": table.layers, "machine": table.machine}
    wrong = [f"{k} {have[k]!r} (this run: {want[k]!r})" for k in want if have[k] != want[k]]
    return (None, "it was measured for another model shape or machine: " + "; ".join(wrong)) if wrong else (table, "")


def latency_table(model: nn.Module, plan, example=None, batch: int = 1, seq: int = 128, threads: int = 2,
                  cache_dir: Optional[str] = None, use_cache: bool = True, verbose: bool = False,
                  reps=REPS) -> LatencyTable:
    """The machine's table for this model shape at ``(batch, seq)``: from memory, the cache, or measured.

    ``example``: model inputs (a dict of tensors) used to export and time; needed only when measuring
    (None: the model's ``dummy_inputs`` if it has them)."""
    key = table_key(model, plan, batch, seq, threads)
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_file(key, cache_dir)
    table, why = read_table(path, key, plan, batch, seq, threads) if use_cache and os.path.isfile(path) else (None, "")
    if why:
        print(f"[leap-fx] WARNING: cached latency table {path} is not used: {why}; measuring it again",
              file=sys.stderr, flush=True)
    if table is None:
        example = example if example is not None else getattr(model, "dummy_inputs", None)
        if example is None:
            raise ValueError("a latency target measures this model in onnxruntime: pass example inputs (the "
                             "job does), e.g. leap_fx.costs.latency.latency_table(model, plan, example, ...)")
        table = measure(model, plan, example, batch, seq, threads, reps, verbose)
        if use_cache:
            write_table(path, table)
    _MEMO[key] = table
    return table
