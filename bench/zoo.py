"""The architecture zoo: transformers-5 model classes from shrunken default configs, through the graph side.

    python -m bench.zoo [--only bert,t5 | --all] [--workers 2] [--timeout 120] [--out bench/results/zoo.json] [--resume]

Every architecture is built with ``AutoModel.from_config(shrink(model_type))`` (``bench/zoo_shrink.py``:
a generic shrinker over the usual size fields; random weights), given example inputs from its config
(``leap_fx.hf.inputs``) and run through ``leap_fx.run.roundtrip``: strict analyze -> a random half of
every family's heads / neurons masked (prepare -> fold) -> strip (self-verified) -> ONNX -> parity in
onnxruntime -> save_slim / load_slim. Each architecture runs in a forked process with a time limit (a stuck
stage is named). ``--all`` sweeps every model type transformers' ``AutoModel`` maps (its base class);
each row also compares the families found with those the config implies (``bench/zoo_implied.py``:
a shortfall with nothing unmatched is a *silent* partial find).
Prints a README-ready table (architecture -> PASS, or the stage and reason) and writes the JSON.
"Standard attention" = the trace has at least one attention site (sdpa or softmax over q.k scores);
the goal is >= 90 % PASS among those. A ``build`` failure is the shrinker's, not the library's.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
import warnings

from bench.zoo_implied import implied, shortfall
from bench.zoo_shrink import shrink
from leap_fx.costs.timing import environment
from leap_fx.hf.inputs import example_inputs
from leap_fx.run.roundtrip import roundtrip
from leap_fx.run.summary import format_table
from passes.io import read_json, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHITECTURES = (
    # encoders
    "bert", "roberta", "xlm-roberta", "camembert", "distilbert", "albert", "electra", "ernie", "megatron-bert",
    "mpnet", "deberta", "deberta-v2", "convbert", "roformer", "layoutlm", "data2vec-text", "rembert",
    "mobilebert", "squeezebert", "funnel", "ibert", "modernbert", "nystromformer",
    # decoders
    "gpt2", "gpt_neo", "gpt_neox", "gptj", "codegen", "bloom", "falcon", "opt", "llama", "mistral", "qwen2",
    "qwen3", "gemma", "gemma2", "phi", "phi3", "olmo", "olmo2", "stablelm", "starcoder2", "persimmon", "mpt",
    "biogpt", "xglm", "gpt_bigcode", "cohere", "granite", "helium",
    # encoder-decoders
    "t5", "mt5", "umt5", "bart", "mbart", "pegasus", "marian", "blenderbot", "plbart", "m2m_100",
    # vision
    "vit", "deit", "beit", "swin", "swinv2", "dinov2", "data2vec-vision", "vit_msn", "convnext",
    # audio
    "wav2vec2", "hubert", "wavlm", "data2vec-audio", "sew", "unispeech", "whisper", "audio-spectrogram-transformer",
)


def run_one(arch: str, report) -> dict:
    """Build, make inputs, round trip; ``report(stage)`` says what is running (for the time limit)."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    report("build")
    t0 = time.perf_counter()
    try:
        torch.manual_seed(0)
        config = shrink(arch)
        type(config).from_dict(config.to_dict())  # read back as load_slim will: a consistent shrunk config
        model = AutoModel.from_config(config).eval()
        inputs = example_inputs(model, batch=2, seq=8)
        with torch.no_grad():  # the model runs eagerly on these inputs, or the harness is at fault, not a pass
            model(**inputs)
    except Exception as exc:  # the shrinker could not make this config consistent, or the inputs are not right
        # (a config transformers refuses when it reads it back is the shrinker's too)
        return {"arch": arch, "status": "FAIL", "stage": "build", "module": "",
                "hint": "shrinker or example-input limitation (the eager forward fails too)",
                "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", "families": {},
                "implied": _implied_or_none(arch)}
    build = round(time.perf_counter() - t0, 2)
    want = implied(model.config)
    with tempfile.TemporaryDirectory() as tmp:
        rt = roundtrip(model, inputs, tmp, seed=0, progress=report, slim=True)
    out = {"arch": arch, **rt.to_dict(), "implied": want}
    out["shortfall"] = shortfall(rt.families, want) if rt.families else ""
    out["silent"] = bool(out["shortfall"]) and rt.status == "PASS" and not rt.families.get("unmatched")
    out["seconds"] = {"build": build, **rt.seconds}
    return out


def _implied_or_none(arch: str) -> dict:
    try:
        return implied(shrink(arch))
    except Exception:  # noqa: BLE001 - no config at all
        return {}


def _child(arch: str, queue) -> None:
    try:
        queue.put(("done", run_one(arch, lambda stage: queue.put(("stage", stage)))))
    except BaseException as exc:  # noqa: BLE001 - an unexpected crash is still a named result
        queue.put(("done", {"arch": arch, "status": "FAIL", "stage": "crash", "module": "", "hint": "",
                            "reason": f"{type(exc).__name__}: {exc}"[:300], "families": {}}))


def sweep(archs, workers: int, timeout: float, progress=print, on_result=None) -> list[dict]:
    """Run every architecture in its own forked process, ``workers`` at a time; ``on_result(results)`` is
    called with the finished results (in ``archs`` order) after each one."""
    ctx = mp.get_context("fork")
    pending, running, results = list(archs), {}, {}
    while pending or running:
        while pending and len(running) < workers:
            arch = pending.pop(0)
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(arch, q), daemon=True)
            p.start()
            running[arch] = (p, q, time.perf_counter(), "start")
        for arch, (p, q, start, stage) in list(running.items()):
            while not q.empty():
                kind, value = q.get()
                if kind == "stage":
                    stage = value
                    running[arch] = (p, q, start, stage)
                else:
                    results[arch] = value
            if arch in results or not p.is_alive() or time.perf_counter() - start > timeout:
                if arch not in results:
                    p.kill()
                    why = f"no result after {timeout:.0f} s" if p.is_alive() or p.exitcode == -9 else \
                        f"process died (exit code {p.exitcode})"
                    results[arch] = {"arch": arch, "status": "FAIL", "stage": stage, "module": "", "families": {},
                                     "reason": why, "hint": "run it alone with --only to see where it stops"}
                p.join(1)
                del running[arch]
                r = results[arch]
                if on_result is not None:
                    on_result([results[a] for a in archs if a in results])
                progress(f"[{len(results)}/{len(results) + len(running) + len(pending)}] {arch}: {r['status']}"
                         f"{'' if r['status'] == 'PASS' else ' at ' + r['stage']} ({time.perf_counter() - start:.0f} s)")
        time.sleep(0.05)
    return [results[a] for a in archs]


def _has_layers(r: dict) -> bool:
    """Attention or experts, by the trace (attention sites) or, when the trace failed, by the config."""
    want = r.get("implied") or {}
    return r.get("families", {}).get("attention_sites", 0) > 0 or bool(want.get("attention")) \
        or bool(want.get("experts"))


def summarize(results: list[dict]) -> dict:
    built = [r for r in results if r["stage"] != "build"]
    standard = [r for r in built if _has_layers(r)]  # a trace failure of an attention model counts as a failure
    passed = [r for r in standard if r["status"] == "PASS"]
    stages: dict[str, int] = {}
    for r in results:
        if r["status"] != "PASS":
            stages[r["stage"]] = stages.get(r["stage"], 0) + 1
    return {"architectures": len(results), "built": len(built), "standard_attention": len(standard),
            "standard_attention_pass": len(passed), "pass_rate": len(passed) / max(1, len(standard)),
            "pass": sum(r["status"] == "PASS" for r in results), "fail_by_stage": stages,
            "silent_partial": sorted(r["arch"] for r in results if r.get("silent"))}


def _result(r: dict) -> str:
    if r.get("silent"):
        return f"SILENT PARTIAL ({r['shortfall']})"
    if r["status"] == "PASS":
        fam = r.get("families", {})
        notes = [f"{fam[k]} {k}" for k in ("frozen", "tied", "interleaved") if fam.get(k)]
        path = r.get("path_taken", "")
        return "PASS" + (f" ({', '.join(notes)})" if notes else "") + ("" if path == "torchscript" else f" via {path}")
    return f"FAIL at {r['stage']}: {r['reason'][:160]}"


def table(results: list[dict], markdown: bool = True) -> str:
    def implied(r):
        want = r.get("implied") or {}
        text = "/".join("?" if want.get(k) is None else str(want[k]) for k in ("attention", "ffn"))
        return text + (f" +{want['experts']} experts" if want.get("experts") else "") if want else "-"
    rows = [{"arch": r["arch"], "class": r.get("model_class", ""), "fams": (
        f"{r['families'].get('attention', 0)}/{r['families'].get('ffn', 0)}" if r.get("families") else "-"),
        "implied": implied(r), "result": _result(r)} for r in results]
    return format_table(rows, [("arch", "architecture", ""), ("class", "model class", ""),
                               ("fams", "attn/ffn families", ""), ("implied", "config implies", ""),
                               ("result", "result", "")], markdown=markdown)


def recount(path: str) -> dict:
    """``implied`` / ``shortfall`` / ``silent`` of every stored result from today's ``zoo_implied`` (configs only)."""
    data = read_json(path)
    for r in data["results"]:
        want = _implied_or_none(r["arch"])
        r["implied"] = want
        if r.get("families"):
            r["shortfall"] = shortfall(r["families"], want)
            r["silent"] = bool(r["shortfall"]) and r["status"] == "PASS" and not r["families"].get("unmatched")
    data["summary"] = {**data["summary"], **summarize(data["results"])}
    write_json(path, data)
    print(table(data["results"]))
    return data["summary"]


def every_model_type() -> list[str]:
    """Every model type transformers' AutoModel maps to a base class (the ``--all`` sweep)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    return sorted(MODEL_MAPPING_NAMES)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated model types (default: the built-in list of "
                                   f"{len(ARCHITECTURES)})")
    ap.add_argument("--all", action="store_true", help="every model type AutoModel maps (hundreds: hours)")
    ap.add_argument("--workers", type=int, default=2, help="architectures run at once (default: 2)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per architecture (default: 180)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "zoo.json"))
    ap.add_argument("--resume", action="store_true", help="keep the results already in --out (a sweep stopped "
                                                          "part way: the file is rewritten after every architecture)")
    ap.add_argument("--recount", action="store_true", help="recompute what each config implies (and the silent "
                                                           "partial finds) for the results in --out; runs nothing")
    args = ap.parse_args(argv)
    if args.recount:
        return recount(args.out)
    archs = args.only.split(",") if args.only else every_model_type() if args.all else list(ARCHITECTURES)
    done = {r["arch"]: r for r in read_json(args.out)["results"]} if args.resume and os.path.isfile(args.out) else {}
    t0 = time.perf_counter()

    def save(finished: list[dict], complete: bool = False) -> tuple[list[dict], dict]:
        results = [done.get(a) or next(r for r in finished if r["arch"] == a) for a in archs
                   if a in done or any(r["arch"] == a for r in finished)]
        summary = {**summarize(results), "seconds": round(time.perf_counter() - t0, 1), "workers": args.workers,
                   "swept": f"{len(results)}/{len(archs)}", "complete": complete}
        write_json(args.out, {"environment": environment(), "summary": summary, "results": results})
        return results, summary
    finished = sweep([a for a in archs if a not in done], max(1, args.workers), args.timeout, on_result=save)
    results, summary = save(finished, complete=True)
    print(table(results))
    print(f"\n{summary['pass']}/{summary['architectures']} PASS; standard attention: "
          f"{summary['standard_attention_pass']}/{summary['standard_attention']} "
          f"({100 * summary['pass_rate']:.0f} %); failures by stage {summary['fail_by_stage']}; silent partial "
          f"finds: {len(summary['silent_partial'])}; {summary['seconds']:.0f} s with {args.workers} workers; "
          f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
