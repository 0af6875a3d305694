"""What the language-model job measures and reports.

- perplexity of the dense and the slim model on the test and validation blocks, both in onnxruntime (the
  slim one also in PyTorch), and of the int8 copy when asked;
- prefill tokens/s (batch 1, ``PROMPT[mode]`` tokens) and decode tokens/s (batch 1 and 8, ``NEW[mode]``
  new tokens, with the KV cache), dense and slim (and int8) ONNX interleaved in one process;
- parameters with the embeddings shown apart (a floor no head / neuron pruning touches), FLOPs of one
  block, file sizes, heads / kv heads / neurons kept per layer.
"""
from __future__ import annotations

import os

from leap_fx.env.version import VERSION
from leap_fx.run.measure import kept_structure, live_of_total
from leap_fx.run.speed import target_result
from leap_fx.run.summary import format_table
from leap_fx.tasks.causal_lm.handler import embedding_parameters
from leap_fx.tasks.causal_lm.metrics import perplexity_onnx, perplexity_torch
from leap_fx.tasks.causal_lm.speed import lm_speed
from passes.export.metadata import write_metadata
from passes.measure import count_flops, count_params

__all__ = ["measure_lm", "lm_report", "lm_summary", "PROMPT", "NEW"]

PROMPT = {"quick": 64, "full": 256}   # prefill tokens of the speed test
NEW = {"quick": 16, "full": 128}      # decoded tokens of the speed test
REPEATS = {"quick": 3, "full": 3}


def _params(model, plan) -> dict:
    total, emb = count_params(model), embedding_parameters(model)
    return {"total": total, "embeddings": emb, "non_embedding": total - emb, "blocks": count_params(model, plan.blocks())}


def measure_lm(task, opts, data, teacher, slim, plan, example, dense_onnx: str, slim_onnx: str, int8_onnx) -> dict:
    """Perplexity, speed, parameters and FLOPs (module docstring)."""
    threads = int(opts.threads) if opts.threads else 2
    test, val = data.blocks["test"], data.blocks["validation"]
    ppl = {"dense": perplexity_onnx(dense_onnx, test, threads=threads),
           "dense_validation": perplexity_onnx(dense_onnx, val, threads=threads),
           "slim": perplexity_onnx(slim_onnx, test, threads=threads),
           "slim_validation": perplexity_onnx(slim_onnx, val, threads=threads),
           "slim_torch": perplexity_torch(slim, test)}
    if int8_onnx:
        ppl["int8"] = perplexity_onnx(int8_onnx, test, threads=threads)
    models = {"dense": dense_onnx, "slim": slim_onnx, **({"int8": int8_onnx} if int8_onnx else {})}
    speed = lm_speed(models, prompt=PROMPT[opts.mode], new_tokens=NEW[opts.mode], batches=(1, 8),
                     repeats=REPEATS[opts.mode], threads=threads, spin=False)
    one = {k: v[:1] for k, v in example.items()}
    flops = {"dense": count_flops(teacher, one, plan), "slim": count_flops(slim, one, plan)}
    return {"perplexity": ppl, "speed": speed, "flops": flops,
            "parameters": {"dense": _params(teacher, plan), "slim": _params(slim, plan)}}


def lm_report(opts, options, task, method, config, data, plan, stripped, export, dense, int8, metrics, measured,
              history) -> dict:
    ppl, params, flops = measured["perplexity"], measured["parameters"], measured["flops"]
    fraction = {"flops": flops["slim"]["encoder"] / max(1, flops["dense"]["encoder"])}
    target = target_result(config.goal, {}, {"slim_fraction": fraction["flops"]}, {}, 1) \
        if config.goal.unit != "latency" else {"target": str(config.goal), "note": "latency targets: not for LMs yet"}
    report = {
        "status": "complete", "task": "causal-lm", "leap_fx_version": VERSION,
        "options": options.to_dict(), "resolved_options": opts.to_dict(), "task_config": task.config.to_dict(),
        "method": {"name": method.name, "kind": method.kind, "log_keys": list(method.log_keys)},
        "method_config": config.to_dict(), "target": target,
        "data": data.summary(),
        "perplexity": {"dense": ppl["dense"]["perplexity"], "slim": ppl["slim"]["perplexity"],
                       "ratio": ppl["slim"]["perplexity"] / ppl["dense"]["perplexity"],
                       "slim_validation": ppl["slim_validation"]["perplexity"],
                       "dense_validation": ppl["dense_validation"]["perplexity"],
                       "slim_torch": ppl["slim_torch"]["perplexity"],
                       **({"int8": ppl["int8"]["perplexity"]} if "int8" in ppl else {}),
                       "blocks": ppl["dense"]["blocks"], "tokens": ppl["dense"]["tokens"], "split": "test",
                       "details": ppl},
        "parameters": {**params, "non_embedding_fraction": params["slim"]["non_embedding"]
                       / max(1, params["dense"]["non_embedding"])},
        "flops": {"seq_len": task.config.block_size, "batch": 1, "dense": flops["dense"], "slim": flops["slim"],
                  "slim_fraction": fraction["flops"]},
        "structure": kept_structure(stripped, plan), "strip": stripped.to_dict(),
        "speed": measured["speed"],
        "onnx": {"path": export.path, "size_bytes": export.size_bytes, "dense_size_bytes": dense.size_bytes,
                 "parity_max_abs_diff": export.max_abs_diff, "kv_heads": export.kv_heads,
                 "attempts": export.attempts, "notes": export.notes},
        "quantized": int8, "train": {"steps": metrics.get("step"), **{k: v for k, v in metrics.items() if k != "step"}},
        "history_records": len(history),
    }
    meta = {"method": method.name, "target": str(config.goal), "flops_fraction": round(fraction["flops"], 4),
            "perplexity_test": round(report["perplexity"]["slim"], 4), "perplexity_dense": round(ppl["dense"]["perplexity"], 4),
            "parity_max_abs_diff": export.max_abs_diff, "leap_fx_version": VERSION}
    report["onnx"]["metadata"] = write_metadata(export.path, meta)
    return report


def _tok_s(speed: dict, name: str, key: str, batch=None) -> str:
    s = speed["models"].get(name)
    if s is None:
        return "-"
    v = s["prefill_tokens_per_s"] if batch is None else s["decode_tokens_per_s"][str(batch)]
    return f"{v['median']:.1f}"


def lm_summary(report: dict) -> str:
    """The printed summary of a language-model run."""
    ppl, par, sp = report["perplexity"], report["parameters"], report["speed"]
    rows = [{"": "perplexity (test, onnxruntime)", "dense": f"{ppl['dense']:.2f}", "slim": f"{ppl['slim']:.2f}",
             "int8": f"{ppl['int8']:.2f}" if "int8" in ppl else "-"}]
    for label, key, batch in (("prefill tok/s (b1)", "prefill", None), ("decode tok/s (b1)", "decode", 1),
                              ("decode tok/s (b8)", "decode", 8)):
        rows.append({"": label, **{n: _tok_s(sp, n, key, batch) for n in ("dense", "slim", "int8")}})
    rows.append({"": "parameters (non-embedding)", "dense": f"{par['dense']['non_embedding']:,}",
                 "slim": f"{par['slim']['non_embedding']:,}", "int8": "-"})
    rows.append({"": "ONNX MB", "dense": f"{report['onnx']['dense_size_bytes'] / 1e6:.1f}",
                 "slim": f"{report['onnx']['size_bytes'] / 1e6:.1f}",
                 "int8": f"{report['quantized']['size_bytes'] / 1e6:.1f}" if report.get("quantized") else "-"})
    head = (f"leap-fx {report['method']['name']} on a causal LM: {report['target']['target']} -> FLOPs "
            f"{report['flops']['slim_fraction']:.3f}, heads {live_of_total(report['structure']['heads'])}, "
            f"neurons {live_of_total(report['structure']['neurons'])}; perplexity x{ppl['ratio']:.2f}")
    steps = (report.get("recover") or {}).get("steps")  # reports before --recover have none
    head += f"; recovered {steps} steps" if steps else ""
    warn = report["target"].get("warning")
    return head + "\n" + format_table(rows, [(k, k, None) for k in ("", "dense", "slim", "int8")]) + (f"\nWARNING: {warn}" if warn else "") + \
        f"\nslim model: {os.path.dirname(report['onnx']['path'])} (leap-fx generate {os.path.dirname(report['onnx']['path'])} \"prompt\")"
