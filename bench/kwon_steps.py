"""Kwon et al. (one-shot, no retraining) on MiniLM-L6 / Rotten Tomatoes: accuracy, speedup, step shares, time.

    python -m bench.kwon_steps [--flops 0.5,0.35] [--threads 2] [--examples 2048] [--tune-examples 512]
                               [--quick] [--work-dir /tmp/leap-fx-kwon] [--out bench/results/kwon_steps.json]
                               [--variant NAME=field:value,field:value ...] [--skip-job]

Per FLOPs target (``flops:X``: fraction of the heads' and FFNs' FLOPs kept):

- **the job**: ``leap_fx.run.run_prune`` with ``--method kwon`` from the shared, cached dense teacher
  (``bench.accuracy``'s row runner; the job hands the method up to 2,048 training examples): test
  accuracy of the exported slim model in onnxruntime, the wall time of the prune stage (Fisher +
  search + rearrangement + tuning; the paper's "pruning time") with its per-step seconds, the
  achieved FLOPs fraction, and the measured onnxruntime speedup, dense vs slim interleaved
  (``bench.accuracy.onnx_speedup``: batch 32 at the run's sequence length);
- **step shares**: from one Fisher pass on the same examples (shared by every target), the model
  after the search alone, after search + rearrangement, and after every step, folded and scored in
  PyTorch on the test split; a step's gain is the accuracy difference it makes (the paper's ablation).
  Each stage also gets its fidelity to the dense teacher on validation and test: accuracy, agreement
  (same predicted class) and ``KL(teacher || pruned)`` per example: on a few hundred examples the
  accuracy moves by +-2 pt from noise, agreement and KL are the steadier signals;
- **tuning variants** (``--variant``): mask tuning again with some ``KwonConfig`` fields changed
  (e.g. ``--variant all-rows=fit_rows:all --variant mid=tune_teacher:intermediate``), scored the same
  way, from the same Fisher pass. ``--skip-job`` leaves out the job rows (a diagnostic run).

Prints a table and writes ``--out`` (JSON). ``--threads`` sets torch's threads (the goal: the whole
prune <= 60 s on 2 CPU cores for MiniLM-L6 with 2K samples).
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import torch
import torch.nn.functional as F

from bench import accuracy as acc_bench
from leap_fx.costs.timing import environment, machine_load
from leap_fx.data import example_inputs, iterate_batches
from leap_fx.masks import fold
from leap_fx.methods import build
from leap_fx.methods.kwon.config import STAGES, KwonConfig
from leap_fx.run.summary import format_table
from leap_fx.train.validation import predict_logits
from passes.analyze import analyze
from passes.io import read_json, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRUNE_STAGE = "one-shot (kwon)"  # the job's Clock stage of the method


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flops", type=acc_bench._floats, default=[0.5, 0.35], help="FLOPs targets (0.5,0.35)")
    p.add_argument("--examples", type=int, default=2048, help="calibration examples of the step shares")
    p.add_argument("--tune-examples", type=int, default=KwonConfig.tune_examples,
                   help=f"examples of mask tuning (default {KwonConfig.tune_examples}; the paper: all 2,048)")
    p.add_argument("--quick", action="store_true", help="the job's quick mode (subsampled data, short sequences)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--work-dir", default="/tmp/leap-fx-kwon", help="run directories, one per target")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "kwon_steps.json"))
    p.add_argument("--quiet", action="store_true", help="no per-stage progress of the job")
    p.add_argument("--variant", action="append", type=_variant, default=[],
                   help="NAME=field:value,...: mask tuning with these KwonConfig fields changed (repeatable)")
    p.add_argument("--skip-job", action="store_true", help="step shares and variants only (no job, no ORT)")
    return p.parse_args(argv)


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _variant(text: str) -> tuple[str, dict]:
    """``NAME=field:value,field:value`` -> ``(NAME, {field: value})`` (fields checked by KwonConfig)."""
    name, _, body = text.partition("=")
    try:
        fields = dict(item.split(":", 1) for item in body.split(",") if item)
        KwonConfig(0.5, **{k: _value(v) for k, v in fields.items()})
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: {e} (e.g. all-rows=fit_rows:all)")
    if name in STAGES:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: {name!r} names a step; choose another name")
    if not name or not fields:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: use NAME=field:value,... e.g. all-rows=fit_rows:all")
    return name, {k: _value(v) for k, v in fields.items()}


def job_row(bench, target: float, tune_examples: int) -> dict:
    """The whole job at one FLOPs target: ORT accuracy, prune wall time, steps' seconds, ORT speedup."""
    bench.method_overrides = {"tune_examples": tune_examples}
    res = acc_bench.pruned_row(bench, acc_bench.Row(f"kwon-flops-{target:g}", "kwon", "structured", target),
                               target=f"flops:{target:g}", target_density=None)
    rep = read_json(res["report"], "kwon run report")
    cal = rep["train"]["calibration"]
    res.update(prune_s=rep["timing"]["stages_s"][PRUNE_STAGE], step_s=cal["seconds"], achieved=cal["achieved"],
               fisher_loss=cal["fisher_loss"], tuning=cal.get("tuning"), seq_len_costs=cal["seq_len"],
               examples=cal["examples"])
    res["onnx_speedup"] = acc_bench.onnx_speedup(bench, res["onnx"], res["flops_fraction"])
    return res


def fidelity(model, data, teacher_logits: dict) -> dict:
    """Accuracy, agreement with the teacher's class and mean ``KL(teacher || model)`` per split."""
    out = {}
    for split, t in teacher_logits.items():
        logits, labels = predict_logits(model, getattr(data, split)), getattr(data, split).features["labels"]
        out[split] = {"acc": float((logits.argmax(-1) == labels).float().mean()),
                      "agree": float((logits.argmax(-1) == t.argmax(-1)).float().mean()),
                      "kl": float(F.kl_div(logits.log_softmax(-1), t.log_softmax(-1), log_target=True,
                                           reduction="batchmean"))}
    return out


def _pruned(teacher, plan, batches, fisher, cfg: KwonConfig) -> tuple:
    model = copy.deepcopy(teacher)  # a prepared (parametrized) model does not deepcopy
    method = build(cfg)
    method.prepare(model, plan)
    t0 = time.perf_counter()
    rep = method.calibrate(model, batches, fisher=fisher)
    return fold(model).eval(), rep, round(time.perf_counter() - t0, 2)


def step_shares(bench, targets, examples: int, tune_examples: int, variants=()) -> dict:
    """Test accuracy (PyTorch) and fidelity after each step and tuning variant, from one Fisher pass."""
    teacher, data = bench.dense_teacher(), bench.data
    plan = analyze(copy.deepcopy(teacher), example_inputs(data.train, 2))
    base, method = copy.deepcopy(teacher), build(KwonConfig(1.0))
    method.prepare(base, plan)
    n = min(examples, len(data.train))
    batches = list(iterate_batches({k: v[:n] for k, v in data.train.features.items()}, bench.base.batch_size))
    t0 = time.perf_counter()
    fisher = method.fisher(base, batches)
    teacher_logits = {s: predict_logits(teacher, getattr(data, s)) for s in ("validation", "test")}
    dense = fidelity(teacher, data, teacher_logits)
    out = {"examples": n, "fisher_s": round(time.perf_counter() - t0, 2),
           "dense_test_acc_torch": dense["test"]["acc"], "dense": dense, "targets": {}}
    runs = [(s, {"stop_after": s}) for s in STAGES] + list(variants)
    for target in targets:
        stages = {}
        for name, fields in runs:
            cfg = KwonConfig(target=f"flops:{target:g}", **{"tune_examples": tune_examples, **fields})
            model, rep, seconds = _pruned(teacher, plan, batches, fisher, cfg)
            stages[name] = {**fidelity(model, data, teacher_logits), "fields": fields, "calibrate_s": seconds,
                            "tuning": rep.get("tuning")}
        accs = {s: v["test"]["acc"] for s, v in stages.items()}
        before = [out["dense_test_acc_torch"]] + [accs[s] for s in STAGES[:-1]]
        out["targets"][f"{target:g}"] = {"test_acc_torch": accs, "stages": stages,
                                         "gain": {s: accs[s] - b for s, b in zip(STAGES, before)}}
    return out


def fidelity_table(shares: dict) -> str:
    rows = [{"target": float(t), "run": name, **{f"{sp[:3]}_{m}": v[sp][m] for sp in ("validation", "test")
                                                 for m in ("acc", "agree", "kl")}}
            for t, got in shares["targets"].items() for name, v in got["stages"].items()]
    cols = [("target", "FLOPs target", ".2f"), ("run", "after", "s")] + \
        [(f"{sp}_{m}", f"{sp} {m}", ".4f") for sp in ("val", "tes") for m in ("acc", "agree", "kl")]
    return format_table(rows, cols)


def table(rows: list[dict]) -> str:
    cols = [("target", "FLOPs target", ".2f"), ("flops_fraction", "FLOPs kept", ".3f"),
            ("test_acc", "test acc (ORT)", ".4f"), ("dense_test_acc", "dense", ".4f"),
            ("speedup", "ORT speedup", ".2f"), ("prune_s", "prune s", ".1f"), ("search", "after search", ".4f"),
            ("rearrange", "+ rearrange", ".4f"), ("tune", "+ tune", ".4f")]
    return format_table(rows, cols)


def main(argv=None, model=None, tokenizer=None, overrides=None) -> dict:
    """Run the bench; ``model``/``tokenizer``/``overrides`` (PruneOptions fields) are for tests."""
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    load_before = machine_load()
    ns = argparse.Namespace(quick=args.quick, epochs=None, seed=args.seed, threads=args.threads,
                            quiet=args.quiet, work_dir=args.work_dir, fresh=True)
    bench = acc_bench.Bench(ns, model, tokenizer, overrides)
    jobs = {} if args.skip_job else {f"{t:g}": job_row(bench, t, args.tune_examples) for t in args.flops}
    shares = step_shares(bench, args.flops, args.examples, args.tune_examples, args.variant)
    rows = []
    for key, job in jobs.items():
        accs = shares["targets"][key]["test_acc_torch"]
        rows.append({"target": float(key), "flops_fraction": job["flops_fraction"], "test_acc": job["test_acc"],
                     "dense_test_acc": job["dense_test_acc"], "speedup": job["onnx_speedup"]["speedup"],
                     "prune_s": job["prune_s"], **{s: accs[s] for s in STAGES}})
    result = {"benchmark": "kwon_steps", "settings": {"mode": bench.mode, "threads": args.threads,
                                                      "flops": args.flops, "examples": args.examples,
                                                      "tune_examples": args.tune_examples,
                                                      "variants": dict(args.variant), "skip_job": args.skip_job,
                                                      "batch_size": bench.base.batch_size,
                                                      "max_length": bench.base.max_length},
              "rows": rows, "jobs": jobs, "step_shares": shares, "env": environment(),
              "machine_load": {"before": load_before, "after": machine_load()}}
    write_json(args.out, result)
    if rows:
        print(table(rows))
    print(fidelity_table(shares))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
