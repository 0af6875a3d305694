"""LeapConfig: what to prune, at which granularity, and LEAP's hyperparameters (paper Sec. 3.2, App. A).

Granule specs (strings, in ``nn.Linear``'s ``[out, in]`` convention; HF ``Conv1D`` weights, stored
``[in, out]``, are handled transposed):

- ``"1x1"``          one score per weight element (unstructured)
- ``"RxC"``          one score per ``R x C`` block (R output rows x C input columns), e.g. ``"32x32"``
- ``"row"``          one score per output row (one neuron of that matrix)
- ``"head"``         tied: one score per attention head, shared by q/k/v/out (needs a Plan)
- ``"neuron"``       tied: one score per FFN neuron, shared by up/gate/down (needs a Plan)

Presets follow the paper's Table 1 (``block_size`` = d, default 32).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Optional

GRANULARITY_PRESETS: dict[str, dict[str, str]] = {
    "unstructured": {"attention": "1x1", "ffn": "1x1"},      # S_1
    "block": {"attention": "{d}x{d}", "ffn": "{d}x{d}"},     # S_d (d = block_size)
    "hybrid": {"attention": "{d}x{d}", "ffn": "1x1"},        # H_32 with d = 32
    "structured": {"attention": "head", "ffn": "neuron"},    # whole heads / neurons: physically smaller
}

TIED = {"head": "attention", "neuron": "ffn"}  # tied granule -> family kind it applies to
SIGMA_GRADS = ("chain", "ste")
RATIOS = ("kept", "soft")  # R(sigma) from the granules Top-K keeps, or from k(sigma) itself (Eq. 5)
DEFAULT_EXCLUDE = ("*classifier*", "*embed*", "*pooler*", "*lm_head*", "*score*",
                   "*qa_outputs*", "*wte*", "*wpe*")
_BLOCK = re.compile(r"^(\d+)x(\d+)$")


def parse_granule(spec: str) -> tuple[str, Optional[tuple[int, int]]]:
    """``"8x16"`` -> ``("block", (8, 16))``; ``"row"`` -> ``("row", None)``; ``"head"`` -> ``("head", None)``."""
    if spec in ("row",) or spec in TIED:
        return spec, None
    m = _BLOCK.match(str(spec))
    if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
        return "block", (int(m.group(1)), int(m.group(2)))
    raise ValueError(f"bad granule spec {spec!r}: use '1x1', 'RxC' with positive ints (e.g. '32x32'), "
                     f"'row', 'head' (attention) or 'neuron' (ffn)")


@dataclass
class LeapConfig:
    """LEAP settings. ``target_density`` is R_target of Eq. 5 (fraction of governed weights kept)."""

    target_density: float
    granularity: str = "unstructured"
    block_size: int = 32
    attention: Optional[str] = None   # granule override for attention-family weights (None = preset)
    ffn: Optional[str] = None         # granule override for feed-forward-family weights
    other: Optional[str] = None       # granule for included weights in no family (None = ffn's, or 1x1)
    temperature: float = 32.0         # T of Eq. 4
    sigma_init: Optional[float] = None  # None => 5 T (App. A), i.e. k = sigmoid(5)
    lambda_max: float = 160.0         # Eq. 7
    lambda_min: float = 10.0          # Eq. 7
    sigma_grad: str = "chain"         # "chain" (with k'(sigma)) or "ste" (authors' code); see mask.py
    ratio: str = "kept"               # R counts kept granules ceil(k n)/n ("kept") or k ("soft"); regularizer.py
    include: tuple[str, ...] = ("*",)          # fnmatch patterns on module FQN
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # fnmatch patterns on module FQN

    def __post_init__(self):
        self.include, self.exclude = tuple(self.include), tuple(self.exclude)
        if not 0.0 < float(self.target_density) <= 1.0:
            raise ValueError(f"target_density={self.target_density} is outside (0, 1]: pass the fraction of "
                             f"weights to keep, e.g. 0.3 keeps 30%")
        if self.granularity not in GRANULARITY_PRESETS:
            raise ValueError(f"unknown granularity {self.granularity!r}: use one of "
                             f"{sorted(GRANULARITY_PRESETS)}, or set attention=/ffn= granule overrides")
        if int(self.block_size) <= 0:
            raise ValueError(f"block_size={self.block_size} must be a positive int, e.g. 32")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (paper uses 16..64)")
        if self.lambda_min > self.lambda_max:
            raise ValueError(f"lambda_min={self.lambda_min} > lambda_max={self.lambda_max}: "
                             f"swap them or lower lambda_min (paper: lambda_min=10, lambda_max in 40..320)")
        if self.lambda_min < 0:
            raise ValueError(f"lambda_min={self.lambda_min} must be >= 0")
        if self.sigma_grad not in SIGMA_GRADS:
            raise ValueError(f"sigma_grad={self.sigma_grad!r}: use one of {SIGMA_GRADS}")
        if self.ratio not in RATIOS:
            raise ValueError(f"ratio={self.ratio!r}: use one of {RATIOS}")
        g = self.granules()
        for role, spec in g.items():
            kind, _ = parse_granule(spec)
            if kind in TIED and TIED[kind] != role:
                raise ValueError(f"granule {spec!r} cannot be used for {role} weights: 'head' is for "
                                 f"attention=, 'neuron' for ffn=; use a block/row granule for {role}=")

    # -- derived -----------------------------------------------------------------------------
    def granules(self) -> dict[str, str]:
        """Resolved granule spec per role: ``{"attention": ..., "ffn": ..., "other": ...}``."""
        preset = GRANULARITY_PRESETS[self.granularity]
        d = int(self.block_size)
        att = self.attention or preset["attention"].format(d=d)
        ffn = self.ffn or preset["ffn"].format(d=d)
        other = self.other or ("1x1" if parse_granule(ffn)[0] in TIED else ffn)
        return {"attention": att, "ffn": ffn, "other": other}

    @property
    def needs_plan(self) -> bool:
        """True when attention and FFN weights are treated differently, or weights are tied."""
        g = self.granules()
        return g["attention"] != g["ffn"] or any(parse_granule(s)[0] in TIED for s in g.values())

    @property
    def sigma0(self) -> float:
        """Initial threshold sigma (App. A: 5 T)."""
        return 5.0 * self.temperature if self.sigma_init is None else float(self.sigma_init)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LeapConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LeapConfig keys {sorted(unknown)}; valid keys: {sorted(known)}")
        return cls(**d)

    def to_json(self, path: Optional[str] = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            import os
            tmp = f"{path}.tmp"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        return text

    @classmethod
    def from_json(cls, text_or_path: str) -> "LeapConfig":
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path) as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))
