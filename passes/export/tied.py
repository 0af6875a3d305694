"""One copy of a tied embedding in an exported graph.

A language model whose output head shares the input embedding (``lm_head.weight is embed_tokens.weight``)
exports with two initializers: the embedding ``E [V, H]`` that ``Gather`` reads, and ``E^T [H, V]``,
constant-folded for the head's ``MatMul``: the largest tensor of a small LM stored twice (SmolLM2-135M:
113 MB of its 538 MB of weights). ``share_tied_head(path)`` finds such a pair (same values, transposed)
and rewrites the head as ``Gemm(reshape(x, [-1, H]), E, transB=1)`` reshaped back to ``[..., V]``: one
copy in the file and in memory. The rewrite is exact (the same products and sums); the caller's parity
check runs on the rewritten file.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["share_tied_head"]


def _tied_pair(model) -> Optional[tuple]:
    """``(MatMul node, its transposed initializer, the embedding initializer)`` of a tied head, or None."""
    from onnx import numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        b = inits[node.input[1]]
        if len(b.dims) != 2:
            continue
        for name in gathered:
            e = inits[name]
            if tuple(e.dims) == (b.dims[1], b.dims[0]) and np.array_equal(numpy_helper.to_array(e).T,
                                                                          numpy_helper.to_array(b)):
                return node, b, e
    return None


def share_tied_head(path: str) -> bool:
    """Rewrite ``path`` in place (see module docstring); True if a tied pair was found and merged."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path, load_external_data=True)
    found = _tied_pair(model)
    if found is None:
        return False
    node, transposed, embedding = found
    x, y = node.input[0], node.output[0]
    hidden = int(embedding.dims[1])
    p = node.name or y
    new = [
        helper.make_node("Shape", [x], [f"{p}/x_shape"], name=f"{p}/Shape"),
        helper.make_node("Slice", [f"{p}/x_shape", f"{p}/zero", f"{p}/minus_one", f"{p}/zero"], [f"{p}/lead"],
                         name=f"{p}/Slice"),
        helper.make_node("Reshape", [x, f"{p}/flat"], [f"{p}/x2d"], name=f"{p}/Reshape2d"),
        helper.make_node("Gemm", [f"{p}/x2d", embedding.name], [f"{p}/y2d"], name=f"{p}/Gemm", transB=1),
        helper.make_node("Concat", [f"{p}/lead", f"{p}/vocab"], [f"{p}/y_shape"], name=f"{p}/Concat", axis=0),
        helper.make_node("Reshape", [f"{p}/y2d", f"{p}/y_shape"], [y], name=f"{p}/ReshapeBack"),
    ]
    consts = {f"{p}/zero": [0], f"{p}/minus_one": [-1], f"{p}/flat": [-1, hidden],
              f"{p}/vocab": [int(embedding.dims[0])]}
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in consts.items())
    nodes = list(model.graph.node)
    at = nodes.index(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + new + nodes[at + 1:])
    if not any(transposed.name in n.input for n in model.graph.node):
        model.graph.initializer.remove(transposed)
    onnx.save(model, path)
    return True
