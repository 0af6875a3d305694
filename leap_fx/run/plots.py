"""Figures of a run (matplotlib, Agg backend), written atomically.

- ``density.png``: density of every weight matrix by layer, one bar group per layer and one bar per
  matrix kind (q/k/v/out/up/gate/down), as the paper's Figure 3.
- ``structure.png``: heads and neurons per layer before and after pruning (what strip removed), the
  view a structured user looks for.
- ``curves.png`` (trained methods): training loss, validation accuracy against the dense teacher's,
  the method's own logged values (LEAP: L_reg of Eq. 5 and lambda of Eq. 7) and the density
  (R(sigma), measured, scheduled) over steps, as the paper's Figures 1-2. The loss panel is scaled
  to the data loss (Eq. 8): LEAP's early lambda * L_reg (~75 at step 1) would flatten it otherwise.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import os  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402

from leap_fx.run.measure import ROLES  # noqa: E402
from passes.io import atomic_path  # noqa: E402

DENSITY_KEYS = ("R", "scheduled_density", "density")


def _save(fig, path: str) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def density_plot(rows: list[dict], path: str, target: float | None = None, title: str = "") -> str:
    """Bar chart of ``report.matrix_densities`` rows: x = layer, one bar per role."""
    if not rows:
        raise ValueError("no per-matrix densities to plot (empty Plan?)")
    layers = sorted({r["layer"] for r in rows})
    roles = [r for r in ROLES if any(x["role"] == r for x in rows)]
    value = {(r["layer"], r["role"]): r["density"] for r in rows}
    width = 0.8 / len(roles)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(layers) + 2), 3.8))
    cmap = plt.get_cmap("tab10")
    for i, role in enumerate(roles):
        xs = [lay + (i - (len(roles) - 1) / 2) * width for lay in layers]
        ys = [value.get((lay, role), float("nan")) for lay in layers]
        ax.bar(xs, ys, width=width, label=role, color=cmap(i))
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("density (fraction of weights kept)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or "Density per weight matrix (paper Fig. 3)")
    ax.legend(ncol=min(len(roles) + 1, 8), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return _save(fig, path)


def _series(history: list[dict], key: str, kind: str = "train"):
    pts = [(r["step"], r[key]) for r in history if r.get("type", "train") == kind and key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _loss_panel(ax, history: list[dict]) -> None:
    """Data loss (Eq. 8: task, CE, KD) and validation CE, the panel scaled to them; the whole objective
    (``loss``, with the method's penalty, e.g. lambda * L_reg) is drawn too but may leave it early."""
    scaled = []
    for key, label in (("task", "data loss (Eq. 8)"), ("ce", "cross-entropy"), ("kd", "distillation")):
        xs, ys = _series(history, key)
        if xs and any(y != 0 for y in ys):
            ax.plot(xs, ys, label=label)
            scaled += ys
    xs, ys = _series(history, "val_loss", "eval")
    if xs:
        ax.plot(xs, ys, "o--", label="validation CE")
        scaled += ys
    xs, ys = _series(history, "loss")
    if xs:
        ax.plot(xs, ys, color="0.55", linewidth=0.8, label="objective + penalty")
        scaled = scaled or ys
    if scaled:
        lo, hi = min(scaled), max(scaled)
        pad = 0.1 * (hi - lo) or 0.1 * abs(hi) or 0.1
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_title("loss")
    ax.legend(fontsize=8)


def _accuracy_panel(ax, history: list[dict], dense: float | None) -> None:
    xs, ys = _series(history, "val_accuracy", "eval")
    if xs:
        ax.plot(xs, ys, "o-", color="tab:green", label="pruned (validation)")
    if dense is not None:
        ax.axhline(dense, color="black", linestyle="--", linewidth=1, label=f"dense teacher {dense:.3f}")
    if not xs and dense is None:
        ax.text(0.5, 0.5, "no validation accuracy logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("validation accuracy")
    ax.legend(fontsize=8)


def _method_panel(ax, history: list[dict], key) -> None:
    names = {"L_reg": "L_reg (Eq. 5)", "lambda": "lambda (Eq. 7)"}
    if key is None:
        ax.set_visible(False)
        return
    xs, ys = _series(history, key)
    if xs:
        ax.plot(xs, ys, color="tab:red")
        if key == "L_reg" and any(y > 0 for y in ys):
            ax.set_yscale("symlog", linthresh=1e-4)
    else:
        ax.text(0.5, 0.5, f"no {key} logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(names.get(key, key))


def _density_panel(ax, history: list[dict], target: float | None) -> None:
    for key, label, style in (("R", "R(sigma) (Eq. 5)", "-"), ("density", "measured density", "--"),
                              ("scheduled_density", "scheduled density (Eq. 1)", ":")):
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, style, label=label)
    if target is not None:
        ax.axhline(target, color="black", linewidth=0.8, label=f"target {target:g}")
    ax.set_ylim(0, 1.02)
    ax.set_title("density")
    ax.legend(fontsize=8)


def curves_plot(history: list[dict], path: str, target: float | None = None, title: str = "",
                keys: tuple = ("L_reg", "lambda"), dense_accuracy: float | None = None) -> str:
    """2x3 panels over steps: loss, validation accuracy (and the dense teacher's), density; two of the
    method's values (``keys``). From a JSONL history."""
    if not any(r.get("type", "train") == "train" for r in history):
        raise ValueError("history has no training records to plot")
    fig, axes = plt.subplots(2, 3, figsize=(14, 6.5), sharex=True)
    _loss_panel(axes[0][0], history)
    _accuracy_panel(axes[0][1], history, dense_accuracy)
    _density_panel(axes[0][2], history, target)
    shown = [k for k in keys if k not in DENSITY_KEYS][:2]
    for ax, key in zip(axes[1][:2], shown + [None] * (2 - len(shown))):
        _method_panel(ax, history, key)
    axes[1][2].set_visible(False)
    for ax in (*axes[1][:2], axes[0][2]):
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def structure_plot(structure: dict, path: str, title: str = "") -> str:
    """Heads and neurons per layer, before and after pruning (``report.kept_structure``)."""
    panels = [(k, rows) for k, rows in (("heads", structure.get("heads", [])),
                                        ("neurons", structure.get("neurons", []))) if rows]
    if not panels:
        raise ValueError("no heads or neurons to plot (empty structure)")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 3.8), squeeze=False)
    for ax, (kind, rows) in zip(axes[0], panels):
        layers = [r["layer"] for r in rows]
        ax.bar(layers, [r["before"] for r in rows], width=0.7, color="0.85", label="before")
        ax.bar(layers, [r["live"] for r in rows], width=0.5, color="tab:blue", label="kept")
        for lay, r in zip(layers, rows):
            ax.text(lay, r["live"], f"{r['live']}", ha="center", va="bottom", fontsize=8)
        kept, before = sum(r["live"] for r in rows), sum(r["before"] for r in rows)
        ax.set_title(f"{kind} kept per layer: {kept}/{before}")
        ax.set_xticks(layers)
        ax.set_xlabel("layer")
        ax.set_ylabel(kind)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def write_plots(report: dict, history: list[dict], out: str, log_keys: tuple = ()) -> dict:
    """``density.png`` always, ``structure.png`` when a structure was stripped, ``curves.png`` when
    there is a training history. Returns their paths."""
    target = report["density"]["target"]  # None for a flops / latency target
    goal = report.get("target") or {"target": f"{target:g}", "value": target}
    opts = report["resolved_options"]
    name = f"{opts['method']} {opts['granularity']}"
    paths = {"density": density_plot(report["density"]["per_matrix"], os.path.join(out, "density.png"),
                                     target, f"Density per matrix ({name}, target {goal['target']})")}
    if any(report.get("structure", {}).values()):
        paths["structure"] = structure_plot(report["structure"], os.path.join(out, "structure.png"),
                                            f"Structure before / after ({name})")
    if any(r.get("type", "train") == "train" for r in history):
        dense = report.get("accuracy", {}).get("dense", {}).get("validation")
        paths["curves"] = curves_plot(history, os.path.join(out, "curves.png"), goal["value"],
                                      f"Training curves ({name})", tuple(log_keys), dense)
    return paths
