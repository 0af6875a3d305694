"""The run's own speed report: dense vs slim ONNX (and int8) side by side, measured in the same run.

``speed_stage`` exports the dense teacher beside the slim model (parity-checked, into a temporary
directory: only its size is kept), optionally quantizes the slim graph to int8 (``--quantize int8``,
``passes/export/quantize.py``: test accuracy, agreement with the fp32 slim predictions, max logit
difference, file size), then times every graph in onnxruntime on the test split's own rows,
interleaved (``latency.onnx_latency``: same inputs, same threads, rotating order) at batch 1 and 32
(and at the latency target's batch). ``target_result`` says how close the run came to its target.
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional

from leap_fx.costs.timing import (
    ORT_SETTINGS,
    machine_load,
    onnx_latency,
    split_inputs_at,
)
from leap_fx.run.evaluate import onnx_predict_logits
from passes.export import export_onnx
from passes.export.quantize import (
    MIN_AGREEMENT,
    QuantizationError,
    agreement,
    check_agreement,
    quantize_int8,
)
from passes.export.sparse import compact_onnx

REPS = {"quick": {1: (5, 40), "large": (1, 6)}, "full": {1: (10, 100), "large": (2, 20)}}  # (warmup, reps)
BATCHES = (1, 32)
TOLERANCE = {"density": 0.01, "flops": 0.01, "latency": 0.05}  # abs. fraction; latency: relative speedup


def _reps(mode: str, batch: int) -> tuple[int, int]:
    return REPS[mode][1 if batch == 1 else "large"]


def quantized_result(slim_onnx: str, data, out: str, source: Optional[str] = None, example=None) -> dict:
    """int8 copy of the slim ONNX (``model.int8.onnx``), its test accuracy and agreement with fp32.
    ``source``: the graph to quantize when ``slim_onnx`` is compacted (same outputs, plain weights); the
    int8 file is then compacted too (``passes.export.sparse``, identical outputs, checked on ``example``)."""
    import numpy as np
    path = os.path.join(out, "model.int8.onnx")
    info = quantize_int8(source or slim_onnx, path)
    if source is not None and example is not None:
        packed = compact_onnx(path, example)
        info.update(size_bytes=packed.bytes, compact=packed.to_dict())
    fp32, int8 = onnx_predict_logits(slim_onnx, data.test), onnx_predict_logits(path, data.test)
    labels = np.asarray([int(x) for x in data.test.labels])
    info.update(agreement(fp32, int8), bound=MIN_AGREEMENT, test=float((int8.argmax(-1) == labels).mean()),
                test_fp32=float((fp32.argmax(-1) == labels).mean()), status="ok")
    try:
        check_agreement(info, MIN_AGREEMENT)
    except QuantizationError as err:
        failed = os.path.join(out, "model.int8.failed.onnx")
        os.replace(path, failed)
        info.update(status="rejected", error=str(err), path=failed)
    return info


def speed_stage(teacher, example, slim_onnx: str, data, out: str, opts, goal=None, cost_batch: int = 1,
                quantize_from: Optional[str] = None) -> dict:
    """Dense / slim (/ int8) latency at batch 1 and 32, file sizes and the int8 result (see module doc)."""
    mode = "quick" if opts.quick else "full"
    threads = int(opts.threads) if opts.threads else ORT_SETTINGS["intra_op_num_threads"]
    quantized = quantized_result(slim_onnx, data, out, quantize_from, example) if opts.quantize == "int8" else None
    batches = sorted(set(BATCHES) | ({cost_batch} if goal is not None and goal.unit == "latency" else set()))
    with tempfile.TemporaryDirectory(prefix="leapfx-dense-") as tmp:
        dense = export_onnx(teacher, example, os.path.join(tmp, "dense.onnx"))
        paths = {"dense": dense.path, "slim": slim_onnx}
        if quantized is not None and quantized["status"] == "ok":
            paths["int8"] = quantized["path"]
        timings = {}
        for b in batches:
            warmup, reps = _reps(mode, b)
            t = onnx_latency(paths, split_inputs_at(data.test, b), reps, warmup, threads, desc=f"latency b{b}")
            t.pop("samples_ms")
            timings[f"b{b}"] = t
    files = {"dense_bytes": dense.size_bytes, "slim_bytes": os.path.getsize(slim_onnx)}
    if quantized is not None:
        files["int8_bytes"] = quantized["size_bytes"]
    return {"latency": {"batches": timings, "threads": threads, "ort": dict(ORT_SETTINGS, intra_op_num_threads=threads),
                        "machine_load": machine_load(), "inputs": "test split rows at the run's max_length"},
            "files": files, "quantized": quantized}


def target_result(goal, metrics: dict, flops: dict, speed: dict, cost_batch: int) -> dict:
    """The target, what the run achieved in its unit, and a warning if it missed by more than ``TOLERANCE``."""
    achieved = {"density": metrics.get("density"), "flops": flops.get("slim_fraction")}.get(goal.unit)
    out = {"target": str(goal), "unit": goal.unit, "value": goal.value, "tolerance": TOLERANCE[goal.unit]}
    if goal.unit == "latency":
        t = speed["latency"]["batches"][f"b{cost_batch}"]
        measured = t["speedup"]["slim"]["median"]
        achieved = 1.0 / measured
        out.update(asked_speedup=1.0 / goal.value, measured_speedup=measured, batch=cost_batch)
        missed = abs(measured * goal.value - 1.0) > TOLERANCE["latency"]
    else:
        missed = achieved is not None and abs(achieved - goal.value) > TOLERANCE[goal.unit]
    out["achieved"] = achieved
    if missed:
        out["warning"] = (f"target {goal} missed: achieved {achieved:.3f} (tolerance {TOLERANCE[goal.unit]:g}"
                          f"{' relative on the speedup' if goal.unit == 'latency' else ''})")
    return out
