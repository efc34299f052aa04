"""The study's report: aggregate over seeds, markdown and CSV tables, the Dice-vs-N plot (pure functions)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SCRATCH, StatsConfig
from .evaluate import metric_names
from .stats import n_key, method_name, paired_vs_scratch


def aggregate(trials: Sequence[dict]) -> list[dict]:
    """One row per (method, N): mean and std over seeds of each trial's test means.

    A trial: {"init", "mode", "n_train", "seed", "n_train_subjects", "metrics": {"test_dice_mean", ...}}.
    """
    keys = metric_names()
    cells: dict[tuple[str, Any], list[dict]] = {}
    for t in trials:
        cells.setdefault((method_name(t["init"], t["mode"]), t["n_train"]), []).append(t)
    rows = []
    for (method, n), ts in sorted(cells.items(), key=lambda kv: (kv[0][0] != SCRATCH, kv[0][0], n_key(kv[0][1]))):
        row: dict[str, Any] = {
            "method": method, "n_train": n, "n_subjects": float(np.mean([t["n_train_subjects"] for t in ts])),
            "n_seeds": len(ts),
        }
        for k in keys:
            vals = np.array([t["metrics"][f"test_{k}"] for t in ts], dtype=np.float64)
            row[f"{k}_mean"] = float(vals.mean())
            row[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def _fmt_pm(m: float, s: float, digits: int) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def results_markdown(rows: Sequence[dict]) -> str:
    """Markdown table: mean ± std over seeds per (method, N)."""
    head = ["method", "N", "seeds", "Dice LV", "Dice Myo", "Dice RV", "Dice mean", "HD95 mean (mm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rows:
        n = f"all ({r['n_subjects']:.0f})" if r["n_train"] == "all" else str(r["n_train"])
        cells = [
            r["method"], n, str(r["n_seeds"]),
            _fmt_pm(r["dice_lv_cavity_mean"], r["dice_lv_cavity_std"], 3),
            _fmt_pm(r["dice_lv_myocardium_mean"], r["dice_lv_myocardium_std"], 3),
            _fmt_pm(r["dice_rv_cavity_mean"], r["dice_rv_cavity_std"], 3),
            _fmt_pm(r["dice_mean_mean"], r["dice_mean_std"], 3),
            _fmt_pm(r["hd95_mean_mean"], r["hd95_mean_std"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_csv(rows: Sequence[dict]) -> str:
    import csv

    if not rows:
        return ""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in keys})
    return buf.getvalue()


def plot_dice_vs_n(rows: Sequence[dict], path: str | os.PathLike, title: str = "Few-shot segmentation") -> Path:
    """Mean Dice against N (log axis; 'all' at its subject count), one line per method, error bars
    = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, rs in by.items():
        rs = sorted(rs, key=lambda r: r["n_subjects"])
        x = [r["n_subjects"] for r in rs]
        ax.errorbar(x, [r["dice_mean_mean"] for r in rs], yerr=[r["dice_mean_std"] for r in rs],
                    marker="o", capsize=3, label=method, linestyle="--" if method == SCRATCH else "-")
    ax.set_xscale("log")
    ticks = sorted({r["n_subjects"] for r in rows})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("labelled training subjects (N)")
    ax.set_ylabel("mean Dice (LV, Myo, RV) on test subjects")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path



def paired_markdown(rows: Sequence[dict], confidence: float = 0.95) -> str:
    head = ["method", "N", "pairs", "Δ Dice vs scratch", f"{int(confidence * 100)}% CI (bootstrap)",
            "Wilcoxon p", "wins"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rows:
        p = "n/a" if math.isnan(r["wilcoxon_p"]) else f"{r['wilcoxon_p']:.3g}"
        lines.append("| " + " | ".join([
            r["method"], str(r["n_train"]), str(r["n_pairs"]), f"{r['mean_diff']:+.4f}",
            f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]", p, f"{r['win_rate']:.0%}",
        ]) + " |")
    return "\n".join(lines) + "\n"



def write_report(trials: Sequence[dict], folder: str | os.PathLike, stats: StatsConfig | None = None,
                 title: str = "Few-shot segmentation") -> dict[str, Path]:
    """results.csv/.md, paired_vs_scratch.csv/.md, trials.csv, per_subject.csv and dice_vs_n.png."""
    stats = stats or StatsConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = aggregate(trials)
    paired = paired_vs_scratch(trials, n_boot=stats.n_boot, confidence=stats.confidence, seed=stats.seed)
    files = {
        "results_csv": folder / "results.csv",
        "results_md": folder / "results.md",
        "paired_csv": folder / "paired_vs_scratch.csv",
        "paired_md": folder / "paired_vs_scratch.md",
        "trials_csv": folder / "trials.csv",
        "per_subject_csv": folder / "per_subject.csv",
        "plot": folder / "dice_vs_n.png",
    }
    files["results_csv"].write_text(rows_csv(rows))
    files["results_md"].write_text(results_markdown(rows))
    files["paired_csv"].write_text(rows_csv(paired))
    files["paired_md"].write_text(paired_markdown(paired, stats.confidence) if paired else "(no scratch baseline in the grid)\n")
    trial_rows = [{"method": method_name(t["init"], t["mode"]), "init": t["init"], "mode": t["mode"],
                   "n_train": t["n_train"], "seed": t["seed"], "n_train_subjects": t["n_train_subjects"],
                   "run_id": t.get("run_id", ""), **t["metrics"]} for t in trials]
    files["trials_csv"].write_text(rows_csv(trial_rows))
    subj = [{"method": method_name(t["init"], t["mode"]), "n_train": t["n_train"], "seed": t["seed"], **r}
            for t in trials for r in t["per_subject"]]
    files["per_subject_csv"].write_text(rows_csv(subj))
    plot_dice_vs_n(rows, files["plot"], title)
    return files
