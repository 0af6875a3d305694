"""What the loop logs: running means between log steps and measured density per family kind."""
from __future__ import annotations

from torch import nn


def weight_kinds(plan, names) -> dict[str, str]:
    """weight name -> family kind (``attention`` / ``ffn``; ``other`` outside any family)."""
    if plan is None:
        return {}
    out = {}
    for n in names:
        fam = plan.family_of(n)
        out[n] = fam.kind if fam is not None else "other"
    return out


def density_by_kind(model: nn.Module, dens: dict[str, float], kinds: dict[str, str]) -> dict[str, float]:
    """Element-weighted measured density overall (``density``) and per family kind (``density_<kind>``)."""
    sums: dict[str, list[float]] = {}
    for name, d in dens.items():
        fqn, _, pname = name.rpartition(".")
        mod = model.get_submodule(fqn)
        n = mod.parametrizations[pname].original.numel() if hasattr(mod, "parametrizations") \
            else getattr(mod, pname).numel()
        for key in ("density", f"density_{kinds[name]}" if name in kinds else None):
            if key:
                acc = sums.setdefault(key, [0.0, 0.0])
                acc[0] += d * n
                acc[1] += n
    return {k: v[0] / v[1] for k, v in sums.items() if v[1]}


class Mean:
    """Running means of the logged values since the last log step (checkpointed with the run)."""

    def __init__(self, state: dict | None = None):
        self.sums: dict[str, float] = dict((state or {}).get("sums", {}))
        self.n = int((state or {}).get("n", 0))

    def add(self, values: dict) -> None:
        self.n += 1
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def pop(self) -> dict:
        out = {k: v / max(1, self.n) for k, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return out

    def state(self) -> dict:
        return {"sums": dict(self.sums), "n": self.n}
