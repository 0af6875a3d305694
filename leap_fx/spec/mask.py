"""What to mask and how coarsely: ``MaskSpec``, the base of every masking method's config (no torch).

Granule specs (strings, in ``nn.Linear``'s ``[out, in]`` convention; HF ``Conv1D`` weights, stored
``[in, out]``, are handled transposed):

- ``"1x1"``          one mask entry per weight element (unstructured)
- ``"RxC"``          one per ``R x C`` block (R output rows x C input columns), e.g. ``"32x32"``
- ``"row"``          one per output row (one neuron of that matrix)
- ``"head"``         tied: one per attention head, shared by q/k/v/out (needs a Plan)
- ``"neuron"``       tied: one per FFN neuron, shared by up/gate/down (needs a Plan)

Presets follow the LEAP paper's Table 1 (``block_size`` = d, default 32). Which mask owner sits on a
granule grid is the method handler's choice (``leap_fx.methods``), not the spec's.

The target: ``target="flops:0.5"`` (or ``"density:0.3"``, ``"latency:0.5"``; ``spec.target``), parsed
once into ``spec.goal``; ``target_density=0.3`` is the same as ``target="density:0.3"``. FLOPs and
latency are counted at ``cost_seq`` tokens (latency at batch ``cost_batch``): the job sets both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Optional

from leap_fx.spec.fields import option
from leap_fx.spec.method import MethodConfig
from leap_fx.spec.target import Target, resolve_target

__all__ = ["MaskSpec", "GRANULARITY_PRESETS", "TIED", "SIGMA_GRADS", "DEFAULT_EXCLUDE", "parse_granule", "stored_block"]

GRANULARITY_PRESETS: dict[str, dict[str, str]] = {
    "unstructured": {"attention": "1x1", "ffn": "1x1"},      # S_1
    "block": {"attention": "{d}x{d}", "ffn": "{d}x{d}"},     # S_d (d = block_size)
    "hybrid": {"attention": "{d}x{d}", "ffn": "1x1"},        # H_32 with d = 32
    "structured": {"attention": "head", "ffn": "neuron"},    # whole heads / neurons: physically smaller
}
TIED = {"head": "attention", "neuron": "ffn"}  # tied granule -> family kind it applies to
SIGMA_GRADS = ("chain", "ste")  # how a learnable Top-K threshold gets its task gradient (masks/topk.py)
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


def stored_block(spec: str, shape, out_axis: int, name: str) -> tuple[int, int]:
    """Granule spec (Linear [out, in] convention) -> block in the stored layout; checks divisibility."""
    kind, block = parse_granule(spec)
    in_dim = shape[1 - out_axis]
    rc = (1, in_dim) if kind == "row" else block
    stored = rc if out_axis == 0 else (rc[1], rc[0])
    if len(shape) != 2 or shape[0] % stored[0] or shape[1] % stored[1]:
        raise ValueError(f"block {spec!r} does not divide weight {name!r} of shape {tuple(shape)} "
                         f"(stored block {stored}). Fix: choose a block_size/granule dividing both dims "
                         f"(e.g. '1x1' or a common divisor) or exclude it via exclude=[...].")
    return stored


@dataclass
class MaskSpec(MethodConfig):
    """Target and placement of masks; ``goal`` is the parsed target."""

    target_density: Optional[float] = option(None, "same as --target density:X: fraction of the prunable "
                                                   "weights to keep, R_target of Eq. 5")
    granularity: str = option("unstructured", "structured (heads/neurons) | hybrid (32x32 attention blocks, "
                                              "unstructured FFN) | block | unstructured")
    block_size: int = option(32, "block size d of the block/hybrid presets")
    attention: Optional[str] = option(None, "granule override for attention weights (None: the preset's)")
    ffn: Optional[str] = option(None, "granule override for feed-forward weights (None: the preset's)")
    other: Optional[str] = option(None, "granule for included weights in no family (None: ffn's, or 1x1)")
    include: tuple[str, ...] = option(("*",), "fnmatch patterns on module names to mask")
    exclude: tuple[str, ...] = option(DEFAULT_EXCLUDE, "fnmatch patterns on module names never masked")
    target: Optional[str] = option(None, "density:0.3 | flops:0.5 | latency:0.5 (None: target_density)")
    cost_seq: Optional[int] = option(None, "tokens per example flops / latency targets are counted at")
    cost_batch: int = option(1, "batch latency targets are measured at")

    def __post_init__(self):
        self.include, self.exclude = tuple(self.include), tuple(self.exclude)
        self._goal = resolve_target(self.target, self.target_density)
        if self._goal.unit == "density":
            self.target_density = self._goal.value
        if self.cost_seq is not None and int(self.cost_seq) < 1 or int(self.cost_batch) < 1:
            raise ValueError(f"cost_seq={self.cost_seq} and cost_batch={self.cost_batch} must be positive ints")
        if self.granularity not in GRANULARITY_PRESETS:
            raise ValueError(f"unknown granularity {self.granularity!r}: use one of "
                             f"{sorted(GRANULARITY_PRESETS)}, or set attention=/ffn= granule overrides")
        if isinstance(self.block_size, bool) or int(self.block_size) <= 0:
            raise ValueError(f"block_size={self.block_size} must be a positive int, e.g. 32")
        for role, spec in self.granules().items():
            kind, _ = parse_granule(spec)
            if kind in TIED and TIED[kind] != role:
                raise ValueError(f"granule {spec!r} cannot be used for {role} weights: 'head' is for "
                                 f"attention=, 'neuron' for ffn=; use a block/row granule for {role}=")
        if self._goal.needs_strip and not self.structured:
            raise ValueError(f"target {self._goal} counts what strip removes, whole heads and neurons: use "
                             f"granularity='structured' with it, or a density target (e.g. 'density:0.3') "
                             f"for granularity={self.granularity!r}")

    @property
    def goal(self) -> Target:
        """The parsed target (unit and fraction kept)."""
        return self._goal

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
    def structured(self) -> bool:
        """Whole heads and neurons only: the result is physically smaller after strip."""
        g = self.granules()
        return (parse_granule(g["attention"])[0], parse_granule(g["ffn"])[0]) == ("head", "neuron")

    def included(self, fqn: str) -> bool:
        return any(fnmatch(fqn, p) for p in self.include) and not any(fnmatch(fqn, p) for p in self.exclude)
