"""PyTorch inference with sparse weights: ``nn.Linear`` -> ``CsrLinear`` where the matrix is sparse enough.

``CsrLinear`` computes ``y = (W x^T)^T + b`` with ``W`` a ``torch.sparse_csr`` tensor on the *left* of
the product (MKL's CSR x dense kernel). The form matters: ``F.linear(x, W_csr)`` gives the same numbers
at 2-20x the time of ``W_csr @ x^T`` (``bench/sparse_kernels.py``, MiniLM-L6 shapes, 1 thread).

Measured against the dense ``F.linear`` (``bench/results/sparse_kernels*.json``): per matrix, CSR wins
at density 0.05 (1.8-3.7x) and 0.1 (1.3-2.2x, one 384x384 cell at 2048 tokens 0.8x), breaks even
around 0.15 at 2048 tokens (batch 32 x 64) and 0.25 at 64 tokens, and loses at 0.3 (0.4-1.0x); the
whole MiniLM-L6 encoder at density 0.1 runs 1.8x (1x64 tokens) / 1.4x (32x64) faster in PyTorch, at
0.05 2.7x / 2.0x. Hence the swap is for matrices at most ``CSR_MAX_DENSITY`` dense. Against the
dense ONNX export in onnxruntime (what ``leap-fx prune`` ships) the CSR encoder only ties at 0.1
(0.99x at 1x64, 0.70x at 32x64) and wins at 0.05 with batch 1 (1.27x; 0.99x at 32x64), and
onnxruntime's own sparse kernel (contrib ``SparseToDenseMatMul``) is 2-200x slower than its dense
``MatMul``: the ONNX export stays dense in compute and compact on disk (``sparse.py``). Inference only.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

CSR_MAX_DENSITY = 0.15  # CSR's break-even with dense at 2048 tokens (module docstring)
MIN_ELEMENTS = 4096     # small matrices: the sparse call's overhead dominates


class CsrLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is stored and multiplied as CSR."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.register_buffer("weight", linear.weight.detach().to_sparse_csr())
        bias = None if linear.bias is None else linear.bias.detach().clone().unsqueeze(1)
        self.register_buffer("bias", bias)  # [out, 1]: added column-wise by addmm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).t()
        y = self.weight @ flat if self.bias is None else torch.addmm(self.bias, self.weight, flat)
        return y.t().reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.weight._nnz()}"


@torch.no_grad()
def csr_linears(model: nn.Module, max_density: float = CSR_MAX_DENSITY,
                min_elements: int = MIN_ELEMENTS) -> list[str]:
    """Replace (in place) every ``nn.Linear`` with at most ``max_density`` non-zeros and at least
    ``min_elements`` weights by a ``CsrLinear``; returns the replaced module names. Eval mode after."""
    if not 0 < max_density <= 1:
        raise ValueError(f"max_density={max_density} must be in (0, 1]")
    swapped = []
    for name, mod in list(model.named_modules()):
        if type(mod) is not nn.Linear or not name or mod.weight.numel() < min_elements:
            continue
        if float((mod.weight != 0).float().mean()) <= max_density:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, CsrLinear(mod))
            swapped.append(name)
    model.eval()
    return swapped
