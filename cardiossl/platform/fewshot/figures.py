"""The study's figures: Dice against N, the validation curve of every trial, Bland-Altman plots of
the clinical measures (matplotlib, Agg; PNG files the driver logs to MLflow)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import SCRATCH
from .stats import method_name, n_key

BLAND_ALTMAN = (("lv_edv_ml", "LV EDV (ml)"), ("lv_ef_pct", "LV EF (%)"), ("rv_edv_ml", "RV EDV (ml)"),
                ("lv_mass_g", "LV mass (g)"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _plt()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _colours(methods: Sequence[str]) -> dict[str, tuple]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    ordered = sorted(methods, key=lambda m: (m != SCRATCH, m))
    return {m: cmap(i % 10) for i, m in enumerate(ordered)}


def plot_dice_vs_n(rows: Sequence[dict], path: str | os.PathLike, title: str = "Few-shot segmentation") -> Path:
    """Mean Dice against N (log axis; 'all' at its subject count), one line per method, error bars
    = std over seeds, open markers = median over seeds."""
    plt = _plt()
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    colours = _colours(list(by))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, rs in by.items():
        rs = sorted(rs, key=lambda r: r["n_subjects"])
        x = [r["n_subjects"] for r in rs]
        ax.errorbar(x, [r["dice_mean_mean"] for r in rs], yerr=[r["dice_mean_std"] for r in rs], color=colours[method],
                    marker="o", capsize=3, label=method, linestyle="--" if method == SCRATCH else "-")
        ax.plot(x, [r["dice_mean_median"] for r in rs], linestyle="none", marker="o", mfc="none", ms=9,
                color=colours[method])
    ax.set_xscale("log")
    ticks = sorted({r["n_subjects"] for r in rows})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("labelled training subjects (N)")
    ax.set_ylabel("test Dice (mean of LV, Myo, RV); open: median")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_validation_curves(trials: Sequence[dict], path: str | os.PathLike, title: str = "validation curves") -> Path:
    """One panel per N; one colour per method, one line per seed; a dot at each trial's best step
    (the checkpoint evaluated) and a cross where it stopped. Shows whether every method converged."""
    plt = _plt()
    ns = sorted({t["n_train"] for t in trials}, key=n_key)
    colours = _colours(sorted({method_name(t["init"], t["mode"]) for t in trials}))
    fig, axes = plt.subplots(1, len(ns), figsize=(4.2 * len(ns), 3.8), dpi=110, squeeze=False, sharey=True)
    for ax, n in zip(axes[0], ns):
        seen = set()
        for t in trials:
            if t["n_train"] != n or not t.get("history"):
                continue
            m = method_name(t["init"], t["mode"])
            h = [(r["step"], r["val_dice"]) for r in t["history"] if math.isfinite(r.get("val_dice", np.nan))]
            if not h:
                continue
            x, y = zip(*h)
            ax.plot(x, y, color=colours[m], lw=1, alpha=0.8, label=None if m in seen else m,
                    linestyle="--" if m == SCRATCH else "-")
            seen.add(m)
            best = t["metrics"].get("best_step", np.nan)
            if best in x:
                ax.plot([best], [y[x.index(best)]], "o", color=colours[m], ms=4)
            ax.plot([x[-1]], [y[-1]], "x", color=colours[m], ms=5)
        ax.set_title(f"N = {n}")
        ax.set_xlabel("optimiser step")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("validation Dice (mean)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title} (o: best checkpoint, x: stop)", fontsize=10)
    return _save(fig, path)


def plot_bland_altman(trials: Sequence[dict], n_train, path: str | os.PathLike) -> Path:
    """Bland-Altman plots at one N: rows = measures, columns = methods; points = (seed, test subject),
    mean of prediction and reference against their difference; bias and bias +- 1.96 SD lines
    (Bland & Altman, Lancet 1986)."""
    plt = _plt()
    methods = sorted({method_name(t["init"], t["mode"]) for t in trials if t["n_train"] == n_train},
                     key=lambda m: (m != SCRATCH, m))
    fig, axes = plt.subplots(len(BLAND_ALTMAN), max(1, len(methods)), figsize=(3.4 * max(1, len(methods)), 2.6 * len(BLAND_ALTMAN)),
                             dpi=100, squeeze=False)
    for j, m in enumerate(methods):
        rows = [r for t in trials if t["n_train"] == n_train and method_name(t["init"], t["mode"]) == m
                for r in t["per_subject"]]
        for i, (key, label) in enumerate(BLAND_ALTMAN):
            ax = axes[i][j]
            pr = np.array([r.get(f"{key}_pred", np.nan) for r in rows], dtype=np.float64)
            rf = np.array([r.get(f"{key}_ref", np.nan) for r in rows], dtype=np.float64)
            ok = np.isfinite(pr) & np.isfinite(rf)
            if ok.any():
                mean, diff = (pr[ok] + rf[ok]) / 2, pr[ok] - rf[ok]
                bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if ok.sum() > 1 else 0.0
                ax.scatter(mean, diff, s=9, alpha=0.6)
                for v, ls in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
                    ax.axhline(v, color="k", lw=0.8, linestyle=ls)
                ax.text(0.02, 0.95, f"bias {bias:+.1f}, SD {sd:.1f}", transform=ax.transAxes, fontsize=7, va="top")
            else:
                ax.text(0.5, 0.5, "not annotated", transform=ax.transAxes, ha="center", fontsize=8)
            if i == 0:
                ax.set_title(m, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{label}\npred - ref", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
    fig.suptitle(f"Bland-Altman, N = {n_train} (x: mean of prediction and reference)", fontsize=10)
    return _save(fig, path)
