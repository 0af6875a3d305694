"""Do unstructured zeros pay off on CPU? Sparse matmul kernels against dense, side by side, interleaved.

    python -m bench.sparse_kernels [--quick | --tiny] [--densities 0.1,0.05] [--threads 1]
                                   [--out bench/results/sparse_kernels.json]

Per weight shape of MiniLM-L6 (q/k/v/out 384x384, up 1536x384, down 384x1536, ``[out, in]``), token
count (batch x sequence: 1x64 and 32x64) and density, ``y = x W^T`` is timed with

- ``torch dense``: ``F.linear`` on the matrix with its zeros (oneDNN / MKL sgemm);
- ``torch CSR``: the same matrix as a ``torch.sparse_csr`` tensor, ``(W @ x^T)^T`` (MKL sparse; the
  form ``passes.export.csr.CsrLinear`` uses), and ``torch CSR F.linear``: ``F.linear(x, W_csr)``;
- ``torch BSR 32x32``: a *block*-pruned matrix of the same density (32x32 blocks, what block
  masks would give) as ``torch.sparse_bsr`` (informative: another mask structure);
- ``ORT dense``: onnxruntime ``MatMul`` with the weight as an initializer (``ORT_SETTINGS``);
- ``ORT CSR``: onnxruntime's contrib ``SparseToDenseMatMul`` with a CSR ``OrtValue`` (timed only at
  the small token count: it is orders of magnitude slower);
- 2:4 semi-structured sparsity (``torch.sparse.to_sparse_semi_structured``): CUDA only, recorded
  as unavailable with the error it raises on CPU.

Unstructured masks are random at exactly the density (the kernels see positions, not values).
Every runner of one cell is timed in interleaved, order-rotating rounds (``interleaved_latency``);
``speedup`` = torch dense median / kernel median. Then the whole MiniLM-L6 encoder (random per-matrix
masks at each density) is timed in PyTorch dense, in PyTorch with every masked matrix a ``CsrLinear``
(``passes.export.csr.csr_linears``) and as the dense ONNX export in onnxruntime (what the job ships).
``--tiny``: toy shapes and a 2-layer toy encoder, for tests.
"""
from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from leap_fx.costs.timing import (
    ORT_SETTINGS,
    environment,
    interleaved_latency,
    machine_load,
    paired_ratio_median,
    summarize,
    timing_session,
)
from leap_fx.hf.models import default_model_dir, quiet_from_pretrained
from leap_fx.run.summary import format_table
from passes.export import export_onnx
from passes.export.csr import csr_linears
from passes.io import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {"full": {"qkvo 384x384": (384, 384), "up 1536x384": (1536, 384), "down 384x1536": (384, 1536)},
          "tiny": {"qkvo 32x32": (32, 32), "up 64x32": (64, 32)}}
TOKENS = {"full": (64, 2048), "tiny": (4, 16)}                 # batch 1 x seq 64, batch 32 x seq 64
REPS = {"full": (3, 30), "quick": (2, 8), "tiny": (1, 3)}     # (warmup, rounds) per cell
ENCODER_REPS = {"full": (1, 8), "quick": (1, 3), "tiny": (1, 2)}
ORT_CSR_MAX_TOKENS = 64
BLOCK = 32


def masked(shape, density: float, seed: int, block: int = 1) -> torch.Tensor:
    """A random matrix keeping exactly ``round(density n)`` entries (or ``block x block`` blocks)."""
    g = torch.Generator().manual_seed(seed)
    grid = (shape[0] // block, shape[1] // block)
    keep = torch.zeros(grid[0] * grid[1])
    keep[torch.randperm(keep.numel(), generator=g)[:max(1, round(density * keep.numel()))]] = 1.0
    mask = keep.view(grid).repeat_interleave(block, 0).repeat_interleave(block, 1)
    return torch.randn(shape, generator=g) * mask


def ort_matmul(weight: torch.Tensor, threads: int, sparse: bool = False):
    """A one-node onnxruntime session computing ``x W^T`` (dense initializer, or contrib CSR input)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    out_f, in_f = weight.shape
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, ORT_SETTINGS["inter_op_num_threads"]
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_SETTINGS["graph_optimization_level"])
    if not sparse:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", in_f])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", out_f])
        wt = numpy_helper.from_array(weight.t().contiguous().numpy(), "wt")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "wt"], ["y"])], "dense", [x], [y], [wt])
        sess = ort.InferenceSession(helper.make_model(graph).SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        return lambda xs: sess.run(None, {"x": xs})[0]
    a = helper.make_sparse_tensor_value_info("a", TensorProto.FLOAT, [out_f, in_f])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [in_f, "n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [out_f, "n"])
    graph = helper.make_graph([helper.make_node("SparseToDenseMatMul", ["a", "b"], ["y"], domain="com.microsoft")],
                              "csr", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    csr = weight.to_sparse_csr()
    value = ort.OrtValue.ort_value_from_sparse_tensor(ort.SparseTensor.sparse_csr_from_numpy(
        list(weight.shape), csr.values().numpy(), csr.col_indices().numpy().astype(np.int64),
        csr.crow_indices().numpy().astype(np.int64), ort.OrtDevice.make("cpu", 0)))
    return lambda xs: sess.run_with_ort_values(["y"], {"a": value, "b": ort.OrtValue.ortvalue_from_numpy(
        np.ascontiguousarray(xs.T))})[0].numpy().T


def semi_structured_status() -> str:
    """Whether 2:4 semi-structured sparsity runs on this machine's CPU (the error if not)."""
    try:
        torch.sparse.to_sparse_semi_structured(masked((64, 64), 0.5, 0))
        return "available"
    except Exception as err:  # noqa: BLE001 - recorded, not raised
        return f"unavailable: {type(err).__name__}: {err}"


def cell_runners(shape, tokens: int, density: float, threads: int, seed: int) -> tuple[dict, dict]:
    """``(runners, max |diff| vs torch dense)`` of one (shape, tokens, density) cell."""
    w, wb = masked(shape, density, seed), masked(shape, density, seed, BLOCK)
    x = torch.randn(tokens, shape[1], generator=torch.Generator().manual_seed(seed + 1))
    xs = x.numpy()
    csr, bsr = w.to_sparse_csr(), wb.to_sparse_bsr((BLOCK, BLOCK))
    runners = {"torch dense": lambda: F.linear(x, w), "torch CSR": lambda: (csr @ x.t()).t(),
               "torch CSR F.linear": lambda: F.linear(x, csr), "torch BSR 32x32": lambda: (bsr @ x.t()).t(),
               "ORT dense": (lambda f=ort_matmul(w, threads): f(xs))}
    if tokens <= ORT_CSR_MAX_TOKENS:
        runners["ORT CSR"] = (lambda f=ort_matmul(w, threads, sparse=True): f(xs))
    ref, ref_b = F.linear(x, w), F.linear(x, wb)
    diffs = {k: float((torch.as_tensor(np.asarray(f())) - (ref_b if "BSR" in k else ref)).abs().max())
             for k, f in runners.items()}
    return runners, diffs


def time_cell(name: str, shape, tokens: int, density: float, args, seed: int) -> list[dict]:
    runners, diffs = cell_runners(shape, tokens, density, args.threads, seed)
    warmup, reps = REPS[args.mode]
    with torch.no_grad():
        wall, _ = interleaved_latency(runners, reps, warmup, desc=f"{name} {tokens} {density}")
    dense = wall["torch dense"]
    return [{"matrix": name, "shape": list(shape), "tokens": tokens, "density": density, "kernel": k,
             "ms": summarize(v), "speedup": summarize(dense)["median"] / summarize(v)["median"],
             "paired_speedup": paired_ratio_median(dense, v), "max_abs_diff": diffs[k]} for k, v in wall.items()]


def encoder_rows(args) -> list[dict]:
    """The whole encoder: PyTorch dense, PyTorch with ``CsrLinear`` (``csr_linears``) and the dense ONNX
    export in onnxruntime (what ``leap-fx prune`` ships), per density and token count."""
    import copy
    import tempfile

    tiny, rows = args.mode == "tiny", []
    for density in args.densities:
        dense = encoder_model(tiny, density)
        sparse = copy.deepcopy(dense)
        swapped = csr_linears(sparse, max_density=density + 0.01, min_elements=1)  # every masked matrix
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "encoder.onnx")
            export_onnx(dense, {"input_ids": torch.ones(2, 16, dtype=torch.long)}, path)
            ort = timing_session(path, threads=args.threads)
            for tokens in TOKENS["tiny" if tiny else "full"]:
                rows.append(encoder_row(dense, sparse, ort, tokens, density, len(swapped), args.mode))
    return rows


def encoder_row(dense, sparse, ort, tokens: int, density: float, n_csr: int, mode: str) -> dict:
    seq = min(64, tokens)
    ids = torch.randint(0, dense.config.vocab_size, (tokens // seq, seq), generator=torch.Generator().manual_seed(tokens))
    feed = {"input_ids": ids.numpy()}
    runners = {"torch dense": lambda: dense(input_ids=ids), "torch CSR": lambda: sparse(input_ids=ids),
               "ORT dense": lambda: ort.run(None, feed)}
    with torch.no_grad():
        ref = dense(input_ids=ids).last_hidden_state
        diff = float((sparse(input_ids=ids).last_hidden_state - ref).abs().max())
        warmup, reps = ENCODER_REPS[mode]
        wall, _ = interleaved_latency(runners, reps, warmup, desc=f"encoder {density} {tokens}")
    med = {k: summarize(v)["median"] for k, v in wall.items()}
    return {"density": density, "tokens": tokens, "batch": tokens // seq, "seq": seq, "csr_matrices": n_csr,
            "ms": {k: summarize(v) for k, v in wall.items()}, "csr_speedup": med["torch dense"] / med["torch CSR"],
            "csr_paired_speedup": paired_ratio_median(wall["torch dense"], wall["torch CSR"]),
            "csr_vs_ort": med["ORT dense"] / med["torch CSR"], "max_abs_diff": diff}


def encoder_model(tiny: bool, density: float, seed: int = 0):
    """MiniLM-L6's encoder (or a tiny BERT) with random per-matrix masks at ``density`` in every encoder Linear."""
    from transformers import AutoModel, BertConfig, BertModel
    if tiny:
        torch.manual_seed(seed)
        model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64))
    else:
        model = quiet_from_pretrained(AutoModel, default_model_dir())
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            if p.dim() == 2 and ".encoder." in f".{name}":
                p.mul_(masked(tuple(p.shape), density, seed + i) != 0)
    return model.eval()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer rounds per cell")
    size.add_argument("--tiny", action="store_true", help="toy shapes and model (tests)")
    p.add_argument("--densities", default="0.1,0.05", help="comma-separated densities (default 0.1,0.05)")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    p.add_argument("--no-encoder", action="store_true", help="skip the whole-encoder timing")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "sparse_kernels.json"))
    args = p.parse_args(argv)
    try:
        args.densities = [float(d) for d in args.densities.split(",") if d.strip()]
    except ValueError:
        p.error(f"--densities {args.densities!r}: pass fractions such as 0.1,0.05")
    if not args.densities or not all(0 < d < 1 for d in args.densities):
        p.error(f"--densities {args.densities}: every density must be in (0, 1)")
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    return args


COLUMNS = [("matrix", "matrix", ""), ("tokens", "tokens", ""), ("density", "density", ".2f"),
           ("kernel", "kernel", ""), ("median", "median ms", ".3f"), ("speedup", "vs torch dense", ".2f")]
ENCODER_COLUMNS = [("density", "density", ".2f"), ("shape", "batch x seq", ""), ("dense", "torch dense ms", ".1f"),
                   ("csr", "torch CSR ms", ".1f"), ("ort", "ORT dense ms", ".1f"),
                   ("csr_speedup", "CSR vs torch dense", ".2f"), ("csr_vs_ort", "CSR vs ORT dense", ".2f")]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta")
    load_before, key = machine_load(), "tiny" if args.mode == "tiny" else "full"
    rows = [r for i, (name, shape) in enumerate(SHAPES[key].items()) for tokens in TOKENS[key]
            for density in args.densities for r in time_cell(name, shape, tokens, density, args, seed=i)]
    encoder = [] if args.no_encoder else encoder_rows(args)
    result = {"benchmark": "sparse_kernels", "mode": args.mode, "threads": args.threads,
              "ort": {**ORT_SETTINGS, "intra_op_num_threads": args.threads},
              "semi_structured_2_4": semi_structured_status(), "rows": rows, "encoder": encoder,
              "env": environment(), "machine_load": {"before": load_before, "after": machine_load()}}
    write_json(args.out, result)
    print(format_table([{**r, "median": r["ms"]["median"]} for r in rows], COLUMNS))
    if encoder:
        print(format_table([{**r, "shape": f"{r['batch']}x{r['seq']}", **{k: r["ms"][name]["median"] for k, name in
                             (("dense", "torch dense"), ("csr", "torch CSR"), ("ort", "ORT dense"))}}
                            for r in encoder], ENCODER_COLUMNS))
    print(f"2:4 semi-structured on CPU: {result['semi_structured_2_4']}\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
