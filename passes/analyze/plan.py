"""The Plan: which weight slices form attention and feed-forward families, keyed by module FQN.

The Plan is the contract between the graph analysis (``passes.analyze``), the mask carrier
(``leap_fx.masks.lifecycle``) and exact stripping (``passes.strip``). It is plain data: it round-trips
through JSON and prints as a table. Its families (their geometry, experts, ties) are in ``families.py``.

``Plan.unmatched`` lists the attention-like, MLP-like and expert sites ``analyze`` saw but could not
match, with the reason (``analyze(..., strict=True)`` raises instead). ``Plan.trace`` says how the graph
was traced when ``torch.export`` failed (data-dependent branches pinned for the example inputs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Optional

from passes.analyze.families import (
    _FAMILY_TYPES,
    ATTENTION,
    EXPERTS,
    FEED_FORWARD,
    OUTPUT_ROLES,
    RESIDUAL,
    AttentionFamily,
    ExpertsFamily,
    Family,
    FamilyFields,
    FeedForwardFamily,
    ResidualFamily,
    Slice,
    Unmatched,
    common_prefix,
)
from passes.io import JsonDataclass

__all__ = ["ATTENTION", "EXPERTS", "FEED_FORWARD", "OUTPUT_ROLES", "RESIDUAL", "AttentionFamily", "ExpertsFamily",
           "Family", "FamilyFields", "FeedForwardFamily", "Plan", "ResidualFamily", "Slice", "Unmatched",
           "common_prefix"]


@dataclass
class Plan(JsonDataclass):  # to_json / from_json: JsonDataclass's, over to_dict / from_dict below
    """Families keyed by their module FQN, plus what was traced and what could not be matched.
    ``residual`` (the residual stream, only when asked for) is kept apart from ``families`` (which
    holds per-layer families only); ``all_families()`` lists both, keyed ``"residual"`` for the stream."""

    families: dict[str, Family] = field(default_factory=dict)
    model_class: str = ""
    residual: Optional[ResidualFamily] = None
    unmatched: list[Unmatched] = field(default_factory=list)
    trace: str = ""  # how the graph was traced when torch.export failed ("": torch.export; pinned.py)

    # -- queries -------------------------------------------------------------------------
    def attention(self) -> list[AttentionFamily]:
        return [f for f in self.families.values() if f.kind == ATTENTION]

    def feed_forward(self) -> list[FeedForwardFamily]:
        """Every feed-forward family: dense ones and routed experts (``router`` set)."""
        return [f for f in self.families.values() if f.kind == FEED_FORWARD]

    def experts(self) -> list[ExpertsFamily]:
        """The mixture-of-experts layers (whole-expert families), in layer order."""
        return sorted((f for f in self.families.values() if f.kind == EXPERTS), key=lambda f: f.layer)

    def routed(self, key: str) -> list[FeedForwardFamily]:
        """The per-expert feed-forward families of ExpertsFamily ``key``, in expert order."""
        return [self.families[k] for k in self.families[key].experts]

    def family_of(self, weight_name: str) -> Optional[Family]:
        """The family a parameter (``"<fqn>.weight"``) belongs to, or None."""
        for fam in self.families.values():
            if any(s.weight_name == weight_name for s in fam.slices):
                return fam
        return None

    def weight_names(self) -> list[str]:
        return sorted({s.weight_name for f in self.families.values() for s in f.slices})

    def all_families(self) -> dict:
        """``families`` plus the residual stream (key ``"residual"``) when the Plan has one."""
        return {**self.families, **({RESIDUAL: self.residual} if self.residual is not None else {})}

    @classmethod
    def from_families(cls, fams: dict, model_class: str = "") -> "Plan":
        """A Plan from ``all_families()``-style entries (the residual stream goes to ``residual``)."""
        res = [f for f in fams.values() if f.kind == RESIDUAL]
        return cls(families={k: f for k, f in fams.items() if f.kind != RESIDUAL}, model_class=model_class,
                   residual=res[0] if res else None)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"model_class": self.model_class,
               "families": {k: asdict(v) for k, v in self.families.items()},
               "unmatched": [asdict(u) for u in self.unmatched]}
        if self.trace:
            out["trace"] = self.trace
        if self.residual is not None:
            out["residual"] = asdict(self.residual)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        fams: dict[str, Family] = {}
        entries = {**d["families"], **({RESIDUAL: d["residual"]} if d.get("residual") else {})}
        for key, fd in entries.items():
            fd = dict(fd)
            typ = _FAMILY_TYPES[fd["kind"]]
            for name in ("q", "k", "v", "out", "up", "down", "gate", "router"):
                if isinstance(fd.get(name), dict):
                    fd[name] = Slice(**fd[name])
            if isinstance(fd.get("slices"), list):
                fd["slices"] = [Slice(**s) if isinstance(s, dict) else s for s in fd["slices"]]
            fams[key] = typ(**fd)
        plan = cls.from_families(fams, d.get("model_class", ""))
        plan.unmatched = [Unmatched(**u) for u in d.get("unmatched", [])]
        plan.trace = d.get("trace", "")
        return plan

    # -- structure ---------------------------------------------------------------------------
    def blocks(self) -> list[str]:
        """The transformer blocks: per layer, the common ancestor of its families (outermost kept)."""
        by_layer: dict[int, list[str]] = {}
        for fam in self.families.values():
            by_layer.setdefault(fam.layer, []).append(fam.fqn)
        found = sorted({common_prefix(fqns) for fqns in by_layer.values()})
        if "" in found:
            return [""]
        return [b for b in found if not any(b != o and b.startswith(o + ".") for o in found)]

    # -- display ---------------------------------------------------------------------------
    def table(self) -> str:
        rows = [("family", "layer", "module", "matrices", "heads x head_dim / ffn width")]
        for fqn, f in sorted(self.families.items(), key=lambda kv: (kv[1].layer, kv[1].kind)):
            if f.kind == FEED_FORWARD and f.router:
                continue  # routed experts: one row per mixture-of-experts layer, below it
            rows.append((f.kind, str(f.layer), fqn, _matrices(f.slices, f.kind == EXPERTS), f.describe()))
            if f.kind == EXPERTS and f.experts:
                routed = self.routed(fqn)
                sizes = sorted({r.width for r in routed})
                size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
                gated = " (gated)" if routed[0].gate is not None else ""
                act = "" if routed[0].activation else ", elementwise gate (not in ACTIVATIONS)"
                rows.append((FEED_FORWARD, str(f.layer), f"{routed[0].fqn}.<e>",
                             _matrices([dataclasses.replace(s, expert=None) for s in routed[0].slices], True),
                             f"{len(routed)} routed x {size}{gated}{act}"))
        if self.residual is not None:
            rows.append((RESIDUAL, "all", "(stream)", f"{len(self.residual.slices)} tensors",
                         self.residual.describe()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [f"WARNING: {u}" for u in self.unmatched]
        lines += [f"NOTE: {self.trace}"] if self.trace else []
        dense = sum(not f.router for f in self.feed_forward())
        moe = self.experts()
        experts = f", {len(moe)} mixture-of-experts layers ({sum(len(f.experts) for f in moe)} routed experts)" \
            if moe else ""
        return f"Plan for {self.model_class or 'model'}: {len(self.attention())} attention, " \
               f"{dense} feed-forward families{experts}\n" + "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _matrices(slices, fused_params: bool = False) -> str:
    """``role=module`` per slice (``role=parameter`` for fused expert tensors), with the positions of fused or
    interleaved slices (of one expert's ffn axis for fused expert tensors)."""
    fused = {s.fqn for s in slices if sum(t.fqn == s.fqn for t in slices) > 1}

    def name(s):
        return s.param if fused_params and s.param != "weight" else s.fqn.rsplit(".", 1)[-1]

    def where(s):
        return s.index is not None or (s.axis != 0 and s.role in ("up", "gate") if fused_params else s.fqn in fused)
    return ", ".join(f"{s.role}={name(s)}" + (s.describe() if where(s) else "") for s in slices)
