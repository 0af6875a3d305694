"""PyTorch inference with sparse weights: ``nn.Linear`` weights as CSR tensors where that is faster.

``F.linear`` multiplies by a ``torch.sparse_csr`` weight with MKL's sparse kernel (any input rank).
``bench/sparse_kernels.py`` times it against the dense kernel at MiniLM-L6's shapes on CPU; it wins
only when a matrix is sparse enough, hence ``max_density`` (default ``CSR_MAX_DENSITY``, see that
bench's README figures). Inference only: a CSR weight takes no gradient and no ``load_state_dict``.
onnxruntime has no such kernel that wins (its contrib ``SparseToDenseMatMul`` is far slower than
dense: the same bench), so the ONNX export stays dense in compute and compact on disk (``sparse.py``).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

CSR_MAX_DENSITY = 0.3   # above this the dense kernel is as fast or faster (bench/sparse_kernels.py)
MIN_ELEMENTS = 4096     # small matrices: the sparse call's overhead dominates


@torch.no_grad()
def csr_linears(model: nn.Module, max_density: float = CSR_MAX_DENSITY,
                min_elements: int = MIN_ELEMENTS) -> nn.Module:
    """Swap (in place) the weight of every ``nn.Linear`` with at most ``max_density`` non-zeros and at
    least ``min_elements`` elements for its CSR form; returns ``model`` (put in eval mode)."""
    if not 0 < max_density <= 1:
        raise ValueError(f"max_density={max_density} must be in (0, 1]")
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if type(mod) is not nn.Linear or not isinstance(w, torch.Tensor) or w.layout != torch.strided:
            continue
        if w.numel() >= min_elements and float((w != 0).float().mean()) <= max_density:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                mod.weight = nn.Parameter(w.detach().to_sparse_csr(), requires_grad=False)
    return model.eval()
