"""Compact storage of sparse weights in ONNX: the file shrinks with the density, the graph stays standard.

A weight initializer ``W`` (``n`` elements, mostly zeros after unstructured pruning) is replaced by
two initializers and six standard ops that rebuild it::

    gaps   uint8[m]   distances between successive stored positions (the first counts from -1)
    values W.dtype[m] the values at those positions
    W = Reshape(ScatterElements(ConstantOfShape([n]), CumSum(Cast(gaps, int64)) - 1, values), W.shape)

A gap over 255 is bridged by stored zeros every 255 positions, so any pattern is exact. At density
``d`` a float32 matrix takes about ``(1 + 4) d n`` bytes instead of ``4 n`` (1.25 d x dense; ONNX's own
``sparse_initializer`` needs int64 indices, 3 d x dense); an int8 matrix (symmetric quantization keeps
a zero weight at 0) about ``2 d n`` bytes instead of ``n``. The rebuild depends on initializers only,
so onnxruntime's constant folding (graph optimisation level basic and above; the default is all)
computes it once when the session loads: inference then runs the very same dense graph, with
outputs identical to the dense file's. With optimisations disabled the rebuild runs on every call
(slower; the same weights, outputs equal up to float rounding as the weights are not prepacked).

Zeros are stored as +0.0 (a folded ``-0.0`` comes back as ``+0.0``); every other value bit for bit.
``compact_onnx`` rewrites a file atomically after checking that onnxruntime gives the same outputs
as the dense file; ``densify`` turns a compacted model back into plain initializers.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from passes.export.inputs import InputSpec, make_inputs
from passes.export.onnx import DEFAULT_SHAPES
from passes.export.parity import ParityError, ort_outputs, ort_session
from passes.io import atomic_path

TAG = "leap_fx.compact"      # metadata key (JSON: tensor -> its gaps / values initializers and shape)
MAX_GAP = 255
MIN_ELEMENTS = 1024          # smaller tensors are left dense (biases, norms: the decoder costs ~0.4 kB)
MAX_RATIO = 0.75             # compacted only when it saves at least a quarter of the tensor's bytes
MIN_OPSET = 11               # CumSum, ScatterElements


def encode(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(gaps uint8, values)`` of ``array`` (flattened, C order); see the module docstring."""
    flat = np.ascontiguousarray(array).reshape(-1)
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        nz = np.zeros(1, dtype=np.int64)  # one stored zero keeps every op non-empty
    d = np.diff(nz, prepend=-1)
    reps = (d + MAX_GAP - 1) // MAX_GAP  # stored entries per gap: zeros bridging it, then the value
    last = np.cumsum(reps) - 1
    gaps = np.full(int(reps.sum()), MAX_GAP, dtype=np.uint8)
    gaps[last] = d - MAX_GAP * (reps - 1)
    values = np.zeros(gaps.size, dtype=flat.dtype)
    values[last] = flat[nz]
    return gaps, values


def decode(gaps: np.ndarray, values: np.ndarray, shape) -> np.ndarray:
    """Inverse of :func:`encode`: the dense array of ``shape``."""
    out = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=values.dtype)
    out[np.cumsum(gaps.astype(np.int64)) - 1] = values
    return out.reshape(shape)


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _candidates(model, min_elements: int, max_ratio: float):
    """``(initializer, dense array, gaps, values)`` of the initializers worth compacting."""
    from onnx import numpy_helper
    graph_inputs = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        if init.name in graph_inputs or init.data_location == 1:  # overridable input / external data
            continue
        n = int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
        if n < min_elements:
            continue
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind not in "fiu":  # float weights, and int8 ones (symmetric quantization keeps 0 at 0)
            continue
        gaps, values = encode(arr)
        if gaps.nbytes + values.nbytes <= max_ratio * arr.nbytes:
            yield init, arr, gaps, values


def _decoder(name: str, arr: np.ndarray, gaps: np.ndarray, values: np.ndarray) -> tuple[list, list]:
    """Initializers and nodes that rebuild ``name`` (nodes named ``<TAG>/<name>/<op>``)."""
    from onnx import TensorProto, helper, numpy_helper
    p = f"{TAG}/{name}/"
    inits = [numpy_helper.from_array(gaps, p + "gaps"), numpy_helper.from_array(values, p + "values"),
             numpy_helper.from_array(np.array([arr.size], np.int64), p + "numel"),
             numpy_helper.from_array(np.array(arr.shape, np.int64), p + "shape")]
    zero = numpy_helper.from_array(np.zeros(1, dtype=arr.dtype))
    nodes = [helper.make_node("ConstantOfShape", [p + "numel"], [p + "zeros"], p + "ConstantOfShape", value=zero),
             helper.make_node("Cast", [p + "gaps"], [p + "gaps64"], p + "Cast", to=TensorProto.INT64),
             helper.make_node("CumSum", [p + "gaps64", f"{TAG}/axis0"], [p + "end"], p + "CumSum"),
             helper.make_node("Sub", [p + "end", f"{TAG}/one"], [p + "positions"], p + "Sub"),
             helper.make_node("ScatterElements", [p + "zeros", p + "positions", p + "values"], [p + "flat"],
                              p + "ScatterElements", axis=0),
             helper.make_node("Reshape", [p + "flat", p + "shape"], [name], p + "Reshape")]
    return inits, nodes


def compact_model(model, min_elements: int = MIN_ELEMENTS, max_ratio: float = MAX_RATIO):
    """A copy of ``model`` (``onnx.ModelProto``) with its sparse initializers compacted; ``(model, tensors)``
    where ``tensors`` maps each compacted name to its shape, non-zeros, dense and compact bytes."""
    from onnx import numpy_helper
    out = type(model)()
    out.CopyFrom(model)
    if _opset(out) < MIN_OPSET or any(p.key == TAG for p in out.metadata_props):
        return out, {}
    found = list(_candidates(out, min_elements, max_ratio))
    if not found:
        return out, {}
    inits, nodes, tensors = [], [], {}
    for init, arr, gaps, values in found:
        more_inits, more_nodes = _decoder(init.name, arr, gaps, values)
        inits += more_inits
        nodes += more_nodes
        tensors[init.name] = {"shape": list(arr.shape), "nonzero": int(np.count_nonzero(arr)),
                              "dense_bytes": int(arr.nbytes), "bytes": int(gaps.nbytes + values.nbytes)}
    names = set(tensors)
    kept = [i for i in out.graph.initializer if i.name not in names]
    shared = [numpy_helper.from_array(np.array(0, np.int64), f"{TAG}/axis0"),
              numpy_helper.from_array(np.array(1, np.int64), f"{TAG}/one")]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + shared + inits)
    original = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes + original)  # the decoders read initializers only: first is topological
    meta = out.metadata_props.add()
    meta.key, meta.value = TAG, json.dumps({n: t["shape"] for n, t in tensors.items()})
    return out, tensors


def densify(model):
    """A copy of a :func:`compact_model` result with plain initializers again (decoders removed)."""
    from onnx import numpy_helper
    out = type(model)()
    out.CopyFrom(model)
    meta = next((p for p in out.metadata_props if p.key == TAG), None)
    if meta is None:
        return out
    shapes = json.loads(meta.value)
    inits = {i.name: i for i in out.graph.initializer}
    dense = [numpy_helper.from_array(decode(numpy_helper.to_array(inits[f"{TAG}/{n}/gaps"]),
                                            numpy_helper.to_array(inits[f"{TAG}/{n}/values"]), shape), n)
             for n, shape in shapes.items()]
    plain = [i for i in out.graph.initializer if not i.name.startswith(TAG + "/")]
    del out.graph.initializer[:]
    out.graph.initializer.extend(plain + dense)
    nodes = [n for n in out.graph.node if not n.name.startswith(TAG + "/")]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    props = [p for p in out.metadata_props if p.key != TAG]
    del out.metadata_props[:]
    out.metadata_props.extend(props)
    return out


@dataclass
class CompactReport:
    path: str
    dense_bytes: int                 # the file before
    bytes: int                       # the file after (equal when nothing was worth compacting)
    tensors: dict = field(default_factory=dict)  # name -> shape, nonzero, dense_bytes, bytes
    max_abs_diff: dict = field(default_factory=dict)  # onnxruntime, compact vs dense file, per "BxS"

    @property
    def ratio(self) -> float:
        return self.bytes / max(1, self.dense_bytes)

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def compact_onnx(path: str, example_inputs: Any, out: Optional[str] = None, shapes=None, atol: float = 0.0,
                 min_elements: int = MIN_ELEMENTS, max_ratio: float = MAX_RATIO) -> CompactReport:
    """Compact the sparse initializers of the ONNX file ``path`` into ``out`` (default: in place).

    Written atomically, and only after onnxruntime (constant folding on, as sessions load by default)
    gave outputs within ``atol`` (default: identical) of the dense file at ``shapes`` (inputs made like
    ``example_inputs``, as ``export_onnx`` checks parity); otherwise ``ParityError`` and nothing written."""
    import onnx

    out = os.path.abspath(out or path)
    model = onnx.load(path)
    compact, tensors = compact_model(model, min_elements, max_ratio)
    report = CompactReport(out, os.path.getsize(path), os.path.getsize(path), tensors)
    if not tensors:
        if out != os.path.abspath(path):
            with atomic_path(out, suffix=".tmp.onnx") as tmp:
                onnx.save(model, tmp)
        return report
    spec = InputSpec.from_example(example_inputs)
    with atomic_path(out, suffix=".tmp.onnx") as tmp:
        onnx.save(compact, tmp)
        dense_s, compact_s = (ort_session(p, level="ORT_ENABLE_BASIC") for p in (path, tmp))
        for batch, seq in shapes or DEFAULT_SHAPES:
            feeds = {n: t.numpy() for n, t in zip(spec.names, make_inputs(spec, batch, seq))}
            diff = np.abs(ort_outputs(compact_s, feeds) - ort_outputs(dense_s, feeds))
            report.max_abs_diff[f"{batch}x{seq if seq is not None else spec.seq}"] = float(diff.max(initial=0.0))
        worst = max(report.max_abs_diff.values())
        if not worst <= atol:
            raise ParityError(f"compacted ONNX differs from {path} by {worst:.3g} > atol {atol:g}; not written",
                              worst)
    report.bytes = os.path.getsize(out)
    return report
