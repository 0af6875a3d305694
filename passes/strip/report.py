"""``StripReport``: what strip did, as a value (JSON round trip), and the Plan of the slim model.

Indices in ``families[...]["kept"]`` refer to the model strip was given; ``a.then(b)`` composes the
report of a second strip (of ``a.plan``) so that they refer to the original dense model again.
"""
from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from passes.analyze.plan import Plan, Slice


@dataclass
class StripReport:
    """Per family: granules before, kept (original indices), folded, placeholder, backend used."""

    backend: str
    families: dict[str, dict] = field(default_factory=dict)
    attributes: dict[str, dict] = field(default_factory=dict)  # module fqn -> {attr: value}
    replaced: dict[str, str] = field(default_factory=dict)     # module fqn -> new class name
    params_before: int = 0
    params_after: int = 0
    plan: Optional[Plan] = None          # the Plan of the stripped model
    max_rel_diff: Optional[float] = None  # self-check on the example inputs (None: not checked)
    float32_rel_diff: Optional[float] = None  # set when float32 rounding exceeded rtol and float64 decided
    config: dict = field(default_factory=dict)  # HF config head counts strip changed (uniform counts only)

    def kept(self, kind: Optional[str] = None) -> dict[str, int]:
        return {k: len(v["kept"]) for k, v in self.families.items() if kind in (None, v["kind"])}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(dataclasses.replace(self, plan=None))
        d["plan"] = self.plan.to_dict() if self.plan is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StripReport":
        d = dict(d)
        plan = d.pop("plan", None)
        return cls(**d, plan=Plan.from_dict(plan) if plan else None)

    def table(self) -> str:
        check = "" if self.max_rel_diff is None else f", verified (max rel diff {self.max_rel_diff:.1e}"
        check += "" if self.float32_rel_diff is None else f" in float64; {self.float32_rel_diff:.1e} in float32"
        check += ")" if self.max_rel_diff is not None else ""
        lines = [f"strip ({self.backend}): params {self.params_before} -> {self.params_after}{check}"]
        for fqn, f in self.families.items():
            ph = " (+1 zeroed placeholder)" if f["placeholder"] is not None else ""
            lines.append(f"  {f['kind']:9s} {fqn}: {f['before']} -> {len(f['kept'])}{ph}"
                         f"  folded {len(f['folded'])}  via {f['removed_by']}")
        return "\n".join(lines)

    def then(self, later: "StripReport") -> "StripReport":
        """``later`` (a strip of ``self.plan``'s model) with kept indices in original terms."""
        fams = {}
        for key, f in later.families.items():
            f = dict(f)
            old = self.families.get(key)
            if old is not None:
                f["before"] = old["before"]
                f["kept"] = [old["kept"][i] for i in f["kept"]]
                if f.get("kv_kept") is not None and old.get("kv_kept") is not None:
                    f["kv_kept"] = [old["kv_kept"][i] for i in f["kv_kept"]]
            fams[key] = f
        attrs = {k: dict(v) for k, v in self.attributes.items()}
        for fqn, a in later.attributes.items():
            attrs[fqn] = {**attrs.get(fqn, {}), **a}
        return dataclasses.replace(later, families={**self.families, **fams}, attributes=attrs,
                                   config={**self.config, **later.config},
                                   replaced={**self.replaced, **later.replaced},
                                   params_before=self.params_before)


def shrunk_slice(sl: Slice, rem: dict) -> Slice:
    """``sl`` after the indices in ``rem`` (``{param: (axis, indices)}``) were removed."""
    _, idx = rem.get(sl.member_name, (sl.axis, []))
    gone = sorted(set(idx))
    dead = set(gone)
    keep = [p - bisect.bisect_left(gone, p) for p in sl.positions() if p not in dead]
    return Slice.at(sl.fqn, sl.param, sl.axis, keep, sl.role, sl.bias, sl.expert) if keep else \
        dataclasses.replace(sl, size=0, index=None)
