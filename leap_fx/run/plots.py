"""Figures of a run (matplotlib, Agg backend), written atomically.

- ``density.png``: density of every weight matrix by layer, one bar group per layer and one bar per
  matrix kind (q/k/v/out/up/gate/down), as the paper's Figure 3.
- ``curves.png`` (trained methods): training loss, the method's own logged values (LEAP: L_reg of
  Eq. 5 and lambda of Eq. 7) and the density (R(sigma), measured, scheduled) over steps, as the
  paper's Figures 1-2.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import os  # noqa: E402

from leap_fx.run.report import ROLES  # noqa: E402
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


def curves_plot(history: list[dict], path: str, target: float | None = None, title: str = "",
                keys: tuple = ("L_reg", "lambda")) -> str:
    """2x2 panels over steps: loss, two of the method's values (``keys``), density, from a JSONL history."""
    if not any(r.get("type", "train") == "train" for r in history):
        raise ValueError("history has no training records to plot")
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    (a_loss, a_reg), (a_lam, a_den) = axes
    for key, label in (("loss", "objective (Eq. 8)"), ("ce", "cross-entropy"), ("kd", "distillation")):
        xs, ys = _series(history, key)
        if xs and any(y != 0 for y in ys):
            a_loss.plot(xs, ys, label=label)
    xs, ys = _series(history, "val_loss", "eval")
    if xs:
        a_loss.plot(xs, ys, "o--", label="validation CE")
    if all(y > 0 for line in a_loss.get_lines() for y in line.get_ydata()):
        a_loss.set_yscale("log")  # lambda * L_reg dominates early, the task loss later
    a_loss.set_title("loss")
    a_loss.legend(fontsize=8)
    names = {"L_reg": "L_reg (Eq. 5)", "lambda": "lambda (Eq. 7)"}
    shown = [k for k in keys if k not in DENSITY_KEYS][:2]
    shown += [None] * (2 - len(shown))
    for ax, key in zip((a_reg, a_lam), shown):
        name = names.get(key, key or "")
        if key is None:
            ax.set_visible(False)
            continue
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, color="tab:red")
            if key == "L_reg" and any(y > 0 for y in ys):
                ax.set_yscale("symlog", linthresh=1e-4)
        else:
            ax.text(0.5, 0.5, f"no {key} logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
    for key, label, style in (("R", "R(sigma) (Eq. 5)", "-"), ("density", "measured density", "--"),
                              ("scheduled_density", "scheduled density (Eq. 1)", ":")):
        xs, ys = _series(history, key)
        if xs:
            a_den.plot(xs, ys, style, label=label)
    if target is not None:
        a_den.axhline(target, color="black", linewidth=0.8, label=f"target {target:g}")
    a_den.set_ylim(0, 1.02)
    a_den.set_title("density")
    a_den.legend(fontsize=8)
    for ax in (a_lam, a_den):
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def write_plots(report: dict, history: list[dict], out: str, log_keys: tuple = ()) -> dict:
    """``density.png`` always; ``curves.png`` when there is a training history. Returns their paths."""
    target = report["density"]["target"]  # None for a flops / latency target
    goal = report.get("target") or {"target": f"{target:g}", "value": target}
    opts = report["resolved_options"]
    name = f"{opts['method']} {opts['granularity']}"
    paths = {"density": density_plot(report["density"]["per_matrix"], os.path.join(out, "density.png"),
                                     target, f"Density per matrix ({name}, target {goal['target']})")}
    if any(r.get("type", "train") == "train" for r in history):
        paths["curves"] = curves_plot(history, os.path.join(out, "curves.png"), goal["value"],
                                      f"Training curves ({name})", tuple(log_keys))
    return paths
