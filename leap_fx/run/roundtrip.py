"""One model through the whole graph side: analyze -> random structured masks -> fold -> strip -> ONNX.

``roundtrip(model, example_inputs, out_dir)`` is what a new user does with an architecture: trace it
(``strict``: every attention-like and MLP-like site must be matched), keep a random half of the heads
and neurons of every family (through the mask carrier, ``zero_granules``: prepare -> fold), strip
(self-verified), export and check onnxruntime parity, and (``slim=True``) save the slim model, load it
back and compare its outputs. Mixture-of-experts models lose random whole experts too (at least
``top_k`` stay). It never raises for a model that fails: the :class:`RoundTrip` names the stage
(trace, analyze, prepare, strip, export, parity, slim), the module, the reason and what to try.
``tests/test_anymodel.py``, ``tests/test_experts_export.py`` and ``bench/zoo.py`` run it.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch

from leap_fx.masks.lifecycle import zero_granules
from passes.analyze import AnalyzeError, analyze
from passes.export import export_onnx
from passes.export.parity import ParityError
from passes.export.slim_io import load_slim, save_slim
from passes.strip import strip
from passes.strip.verify import outputs

STAGES = ("trace", "analyze", "prepare", "strip", "export", "parity", "slim")
HINTS = {
    "trace": "pass example inputs the forward accepts, use_cache=False, no data-dependent Python control flow",
    "analyze": "see the unmatched sites: an op between the projections and the attention the matcher does not "
               "follow, or an op between up and down that is not elementwise",
    "prepare": "check the Plan against the model (analyze this very model); exclude the family",
    "strip": "leave the named family out of the Plan and strip the rest, or report the architecture",
    "export": "export with exporter='dynamo', or pass dynamic_axes= for what the model allows",
    "parity": "compare at the failing shape; pass dynamic_axes= / shapes= if the model rejects it",
    "slim": "load_slim needs the dense model: pass slim=<a function building it> for a class outside transformers",
}


@dataclass
class RoundTrip:
    """Outcome of one round trip: PASS, or the failing stage with module, reason and hint."""

    model_class: str
    status: str = "PASS"
    stage: str = ""
    module: str = ""
    reason: str = ""
    hint: str = ""
    families: dict = field(default_factory=dict)  # counts: attention, ffn, frozen, tied, coupled, unmatched, experts
    kept: dict = field(default_factory=dict)      # family -> [kept, before]
    parity: dict = field(default_factory=dict)    # "BxS" -> max |ORT - PyTorch|
    path_taken: str = ""
    dynamic_axes: dict = field(default_factory=dict)  # of the exported ONNX inputs
    slim: Optional[float] = None  # max |loaded slim model - stripped model| (None: not run)
    params: tuple = (0, 0)
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def fail(self, stage: str, exc: BaseException, module: str = "") -> "RoundTrip":
        self.status, self.stage, self.module = "FAIL", stage, module
        self.reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}"
        self.hint = HINTS[stage]
        return self


def random_keep(plan, seed: int, fraction: float = 0.5) -> dict[str, list[int]]:
    """A random ``fraction`` (at least one) of every family's granules, per Plan key; whole experts too, at least
    ``top_k`` of them (strip keeps that many anyway)."""
    g = torch.Generator().manual_seed(seed)

    def least(f) -> int:
        return f.top_k if f.kind == "experts" else 1
    return {key: sorted(torch.randperm(f.granules, generator=g)[:max(least(f), int(f.granules * fraction))].tolist())
            for key, f in plan.families.items()}


def _summary(plan) -> dict:
    att = plan.attention()
    return {"attention": len(att), "ffn": len(plan.feed_forward()), "frozen": sum(bool(f.frozen) for f in att),
            "tied": len({f.tie for f in att if f.tie}), "coupled": sum(len(f.coupled) for f in att),
            "interleaved": sum(f.q.index is not None for f in att), "unmatched": len(plan.unmatched),
            "attention_sites": len(att) + sum(u.kind == "attention" for u in plan.unmatched),
            "experts": len(plan.experts())}


def roundtrip(model: torch.nn.Module, example_inputs: Any, out_dir: str, seed: int = 0, strict: bool = True,
              onnx: bool = True, progress: Optional[Callable[[str], None]] = None, slim: Any = False,
              **export_kw) -> RoundTrip:
    """Run ``model`` (in place) through the stages; see the module doc. ``progress(stage)`` is called as
    each stage starts; ``slim``: True (a transformers class, found in its registries) or a function building
    the dense model; ``export_kw`` go to export_onnx."""
    rt, clock = RoundTrip(type(model).__name__), time.perf_counter()
    tell = progress or (lambda stage: None)

    def lap(stage, nxt=None):
        nonlocal clock
        rt.seconds[stage], clock = round(time.perf_counter() - clock, 2), time.perf_counter()
        if nxt:
            tell(nxt)
    tell("analyze")
    try:
        plan = analyze(model, example_inputs)
    except AnalyzeError as exc:
        rt.families = {"attention": 0, "ffn": 0, "unmatched": len(exc.unmatched),
                       "attention_sites": sum(u.kind == "attention" for u in exc.unmatched)}
        stage = "trace" if "torch.export failed" in str(exc) or "not parameters of" in str(exc) else "analyze"
        return rt.fail(stage, exc, exc.unmatched[0].module if exc.unmatched else "")
    rt.families = _summary(plan)
    if strict and plan.unmatched:
        text = "; ".join(str(u) for u in plan.unmatched[:4])
        return rt.fail("analyze", AnalyzeError(f"{len(plan.unmatched)} site(s) not matched: {text}"),
                       plan.unmatched[0].module)
    lap("analyze", "prepare")
    try:
        zero_granules(model, plan, random_keep(plan, seed))
    except Exception as exc:  # noqa: BLE001 - any failure here is reported with its stage
        return rt.fail("prepare", exc)
    lap("prepare", "strip")
    before = sum(p.numel() for p in model.parameters())
    try:
        report = strip(model, plan, example_inputs)
    except Exception as exc:  # noqa: BLE001
        return rt.fail("strip", exc, _culprit(str(exc)))
    rt.kept = {k: [len(f["kept"]), f["before"]] for k, f in report.families.items()}
    rt.params = (before, sum(p.numel() for p in model.parameters()))
    lap("strip", "export" if onnx else None)
    if onnx:
        try:
            rep = export_onnx(model, example_inputs, os.path.join(out_dir, "model.onnx"), **export_kw)
        except ParityError as exc:
            return rt.fail("export" if exc.side == "pytorch" else "parity", exc, rt.model_class)
        except Exception as exc:  # noqa: BLE001
            return rt.fail("export", exc, rt.model_class)
        rt.parity, rt.path_taken, rt.dynamic_axes = rep.max_abs_diff, rep.path_taken, rep.dynamic_axes
        lap("export", "slim" if slim else None)
    if slim:
        try:
            rt.slim = _slim(model, example_inputs, os.path.join(out_dir, "slim"), plan, report, slim)
        except Exception as exc:  # noqa: BLE001
            return rt.fail("slim", exc, rt.model_class)
        lap("slim")
    return rt


def _slim(model, example_inputs, folder: str, plan, report, factory) -> float:
    """save_slim -> load_slim; the largest difference of the loaded model's outputs (0.0 for an exact trip)."""
    save_slim(model, folder, plan=plan, strip_report=report)
    loaded = load_slim(folder, None if factory is True else factory)
    want, got = outputs(model, example_inputs), outputs(loaded, example_inputs)
    if len(want) != len(got) or any(a.shape != b.shape for a, b in zip(want, got)):
        raise ValueError(f"the loaded slim model returns other shapes {[tuple(t.shape) for t in got]} than the "
                         f"stripped one {[tuple(t.shape) for t in want]}")
    return max([float((a - b).abs().max()) for a, b in zip(want, got) if a.numel()] + [0.0])


def _culprit(text: str) -> str:
    i = text.find("family '")
    return text[i + 8:].split("'", 1)[0] if i >= 0 else ""


def copy_and_run(model, example_inputs, out_dir: str, **kw) -> RoundTrip:
    """``roundtrip`` on a deep copy (the caller's model stays dense)."""
    return roundtrip(copy.deepcopy(model), example_inputs, out_dir, **kw)


__all__ = ["STAGES", "RoundTrip", "random_keep", "roundtrip", "copy_and_run"]
