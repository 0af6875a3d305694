"""int8 on top of the slim graph: onnxruntime dynamic quantization, judged by agreement, not parity.

``quantize_int8(src, dst)`` runs ``onnxruntime.quantization.quant_pre_process`` (ONNX shape inference
and graph cleanup; symbolic shape inference is skipped, it does not complete on these exports) and
``quantize_dynamic`` (weights int8 per tensor, activations quantized on the fly: MatMul ->
DynamicQuantizeLinear + MatMulInteger, embeddings' Gather dequantized), written atomically.

int8 changes every logit a little, so the fp32 export's 1e-4 parity does not apply. ``agreement``
compares predictions on real inputs instead: the fraction of rows whose argmax equals the fp32 slim
model's, and the max |logit difference|. ``check_agreement`` raises ``QuantizationError`` below
``MIN_AGREEMENT``.
"""
from __future__ import annotations

import os

import numpy as np

from passes.io import atomic_path, check_file_target, quiet_logger

# int8 predictions must equal the fp32 slim model's on >= 95 % of the rows. Flips happen on the rows
# closest to the decision boundary: the quick MiniLM job (flops:0.5) agreed on 96.25 % of 400 test rows
# with the same accuracy (0.7500 int8, 0.7475 fp32), so 97 % would have refused a good model.
MIN_AGREEMENT = 0.95


class QuantizationError(RuntimeError):
    """The int8 model disagrees with the fp32 model on too many predictions."""


def quantize_int8(src: str, dst: str) -> dict:
    """Dynamic int8 quantization of the ONNX file ``src`` into ``dst``; returns what was done."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not str(dst).endswith(".onnx"):
        raise ValueError(f"int8 output must end with .onnx, got {dst!r}")
    dst = check_file_target(dst, "quantize_int8: dst")  # before any work: a directory there is refused
    notes = []
    # quant_pre_process / quantize_dynamic advise on the root logger: kept out of the run's output
    with atomic_path(dst, suffix=".tmp.onnx") as tmp, quiet_logger():
        pre = tmp[: -len(".onnx")] + ".pre.onnx"
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
            source = pre
        except Exception as exc:  # pre-processing is an optimisation: quantize the export as it is
            notes.append(f"pre-processing skipped ({type(exc).__name__}: {exc})")
            source = src
        try:
            quantize_dynamic(source, tmp, weight_type=QuantType.QInt8)
        finally:
            if os.path.exists(pre):
                os.remove(pre)
    return {"path": dst, "size_bytes": os.path.getsize(dst), "weight_type": "int8",
            "activations": "dynamic (per batch)", "notes": notes}


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """Agreement of ``other``'s argmax with ``reference``'s, and the max |logit difference| (rows x classes)."""
    if reference.shape != other.shape:
        raise ValueError(f"logits of shape {other.shape} cannot be compared with {reference.shape}")
    if reference.size == 0:
        raise ValueError("no rows to compare: pass logits of at least one example")
    same = reference.argmax(-1) == other.argmax(-1)
    return {"agreement": float(same.mean()), "rows": int(same.size),
            "max_abs_logit_diff": float(np.abs(reference - other).max())}


def check_agreement(result: dict, bound: float = MIN_AGREEMENT) -> None:
    """Raise ``QuantizationError`` when ``result['agreement']`` (from ``agreement``) is below ``bound``."""
    if not result["agreement"] >= bound:
        raise QuantizationError(f"int8 model agrees with the fp32 slim model on {result['agreement']:.2%} of "
                                f"{result['rows']} predictions, below the bound {bound:.0%} (max |logit diff| "
                                f"{result['max_abs_logit_diff']:.3g}): use the fp32 model.onnx")
