"""Graph fusions for exported transformer graphs, measured against the plain export in bench/speedup.py.

Each fusion writes a new ONNX file; the caller checks parity against PyTorch (``parity.parity``) before
trusting it (ORT's transformer fuser can stamp a wrong head count on a pruned layer).

- ``attention``: onnxruntime's transformer optimizer (``onnxruntime.transformers.optimizer``, BERT
  fusions: Attention with packed QKV, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization).
  The TorchScript export reshapes q/k/v to ``(B, S, -1, head_dim)``, from which the fuser cannot read
  the head count (it gives up on Attention), and a single ``num_heads`` argument is wrong for a
  pruned model whose layers keep different counts. ``pin_head_counts`` first writes each layer's own
  count into those reshapes (``q/k/v width / head_dim`` from the projection's weight), so every
  Attention node gets its layer's ``num_heads``.
- ``norms``: the same without the Attention fusion (what the elementwise fusions alone do).
- ``gemm``: ``MatMul(x, W) + b`` on 3-D activations -> ``Reshape(x, [-1, K])``, ``Gemm(x, W, b)``, reshape
  back: the bias is added inside the GEMM instead of by a separate memory-bound Add over ``[B, S, N]``.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from passes.io import atomic_path, quiet_logger


def _constants(graph) -> dict:
    from onnx import numpy_helper
    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _projection_width(name: str, producers: dict, consts: dict) -> Optional[int]:
    """Output width of ``MatMul(x, W)`` (through one bias Add) that produced ``name``, from ``W``'s shape."""
    node = producers.get(name)
    if node is not None and node.op_type == "Add":
        node = next((producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul"), None)
    if node is None or node.op_type != "MatMul" or node.input[1] not in consts:
        return None
    w = consts[node.input[1]]
    return int(w.shape[-1]) if w.ndim == 2 else None


def pin_head_counts(model) -> int:
    """Replace the ``-1`` head axis of ``Reshape(proj, Concat(B, S, -1, head_dim))`` by the layer's head
    count (in place on an ``onnx.ModelProto``); returns how many reshapes were pinned."""
    from onnx import numpy_helper
    g = model.graph
    consts, producers = _constants(g), {o: n for n in g.node for o in n.output}
    pinned = 0
    for node in g.node:
        cat = producers.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
        if cat is None or cat.op_type != "Concat" or len(cat.input) != 4:
            continue
        heads, dim = consts.get(cat.input[2]), consts.get(cat.input[3])
        if heads is None or dim is None or heads.size != 1 or dim.size != 1 or int(heads.reshape(-1)[0]) != -1:
            continue
        width = _projection_width(node.input[0], producers, consts)
        if width is None or width % int(dim.reshape(-1)[0]):
            continue
        name = f"{cat.input[2]}__heads{width // int(dim.reshape(-1)[0])}_{pinned}"
        g.initializer.append(numpy_helper.from_array(
            np.full(heads.shape, width // int(dim.reshape(-1)[0]), dtype=heads.dtype), name))
        cat.input[2] = name
        pinned += 1
    return pinned


def fuse_attention(src: str, dst: str, attention: bool = True) -> dict:
    """Pinned head counts, then ORT's BERT fusions (see the module doc); ``attention=False``: all but
    the Attention fusion (SkipLayerNormalization, BiasGelu, EmbedLayerNormalization alone)."""

    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions
    model = onnx.load(src)
    pinned = pin_head_counts(model)
    options = FusionOptions("bert")
    options.enable_attention = attention
    # per-layer widths != hidden size: the fuser's warnings about it are expected here
    with quiet_logger("onnxruntime.transformers"), atomic_path(dst, suffix=".tmp.onnx") as tmp:
        onnx.save(model, tmp)
        opt = optimizer.optimize_model(tmp, model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
                                       optimization_options=options)
        opt.save_model_to_file(tmp)
    heads = [int(a.i) for n in onnx.load(dst).graph.node if n.op_type == "Attention" for a in n.attribute
             if a.name == "num_heads"]
    return {"pinned_reshapes": pinned, "fused": {k: v for k, v in opt.get_fused_operator_statistics().items() if v},
            "attention_heads": heads}


def _gemm_nodes(prefix: str, matmul, add, bias: str, k: int, n: int, extra: list) -> list:
    from onnx import helper, numpy_helper
    extra += [numpy_helper.from_array(np.array([-1, k], np.int64), prefix + "flat"),
              numpy_helper.from_array(np.array([n], np.int64), prefix + "width")]
    x = matmul.input[0]
    return [helper.make_node("Reshape", [x, prefix + "flat"], [prefix + "x2"]),
            helper.make_node("Gemm", [prefix + "x2", matmul.input[1], bias], [prefix + "y2"]),
            helper.make_node("Shape", [x], [prefix + "lead"], end=-1),
            helper.make_node("Concat", [prefix + "lead", prefix + "width"], [prefix + "shape"], axis=0),
            helper.make_node("Reshape", [prefix + "y2", prefix + "shape"], [add.output[0]])]


def fuse_gemm_bias(src: str, dst: str) -> dict:
    """``MatMul(x, W) + b`` -> flattened ``Gemm(x, W, b)`` (see the module doc)."""
    import onnx
    model = onnx.load(src)
    g = model.graph
    consts = {i.name: i for i in g.initializer}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in consts}
    replace, extra = {}, []
    for n in g.node:
        after = users.get(n.output[0], []) if n.op_type == "MatMul" and n.input[1] in consts else []
        if len(after) != 1 or after[0].op_type != "Add" or len(consts[n.input[1]].dims) != 2:
            continue
        bias = [alias.get(i, i) for i in after[0].input if i != n.output[0]]  # deduplicated biases: Identity
        if len(bias) != 1 or bias[0] not in consts or len(consts[bias[0]].dims) != 1:
            continue
        k, width = consts[n.input[1]].dims
        replace[id(n)] = _gemm_nodes(f"gemm{len(replace)}_", n, after[0], bias[0], k, width, extra)
        replace[id(after[0])] = []
    nodes = [m for n in g.node for m in replace.get(id(n), [n])]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(extra)
    with atomic_path(dst, suffix=".tmp.onnx") as tmp:
        onnx.save(model, tmp)
    return {"gemm": sum(1 for v in replace.values() if v)}


FUSIONS: dict[str, Callable[[str, str], dict]] = {
    "attention": fuse_attention, "norms": lambda src, dst: fuse_attention(src, dst, attention=False),
    "gemm": fuse_gemm_bias}


def fuse(src: str, dst: str, how: str) -> dict:
    """Apply fusion ``how`` (``FUSIONS``) to ``src``, writing ``dst`` (atomically); returns what it did."""
    if how not in FUSIONS:
        raise ValueError(f"fusion {how!r}: use one of {sorted(FUSIONS)}")
    return FUSIONS[how](src, dst)
