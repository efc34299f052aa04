"""The study's report: per (method, N) aggregates over seeds, the comparison with scratch, markdown
and CSV tables, and the figures (pure functions of trial results).

Tables (each a ``.md`` and a ``.csv`` in the report folder):

* ``results``: Dice per structure, mean and median over seeds, failed trials, HD95 with the count
  of undefined (empty-structure) cases;
* ``convergence``: steps to the best validation Dice, steps to 95 % of it, trials that stopped on
  their own (patience) rather than at the cap;
* ``paired_vs_scratch``: differences to scratch with training runs as the unit (``stats``);
* ``clinical``: LV/RV EDV, ESV, EF and LV mass errors (mean absolute error and bias);
* ``regions``: Dice at ED and ES, in the basal / mid / apical third, and label pixels outside the
  network's view.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SCRATCH, StatsConfig
from .evaluate import CLINICAL, REGIONS, STRUCTURES, empty_names, metric_names
from .stats import compare_to_scratch, failed, method_name, n_key

CLINICAL_LABELS = {"lv_edv_ml": "LV EDV (ml)", "lv_esv_ml": "LV ESV (ml)", "lv_ef_pct": "LV EF (%)",
                   "rv_edv_ml": "RV EDV (ml)", "rv_esv_ml": "RV ESV (ml)", "rv_ef_pct": "RV EF (%)",
                   "lv_mass_g": "LV mass (g)"}


def _vals(ts: Sequence[dict], key: str) -> np.ndarray:
    return np.array([t["metrics"].get(key, np.nan) for t in ts], dtype=np.float64)


def _stat(v: np.ndarray, how: str) -> float:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    if how == "std":
        return float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(getattr(np, how)(v))


def aggregate(trials: Sequence[dict], failure_dice: float = 0.5) -> list[dict]:
    """One row per (method, N): mean, std and median over seeds of each trial's test numbers, the
    number of failed trials, convergence and the summed counts of undefined HD95."""
    cells: dict[tuple[str, Any], list[dict]] = {}
    for t in trials:
        cells.setdefault((method_name(t["init"], t["mode"]), t["n_train"]), []).append(t)
    keys = (metric_names() + ["dice_ed", "dice_es"] + [f"dice_{r}" for r in REGIONS]
            + [f"lost_frac_{s}" for s in STRUCTURES.values()]
            + [f"{m}_{k}" for m in CLINICAL for k in ("mae", "bias")])
    rows = []
    for (method, n), ts in sorted(cells.items(), key=lambda kv: (kv[0][0] != SCRATCH, kv[0][0], n_key(kv[0][1]))):
        row: dict[str, Any] = {
            "method": method, "n_train": n, "n_subjects": float(np.mean([t["n_train_subjects"] for t in ts])),
            "n_seeds": len(ts), "failed": sum(failed(t, failure_dice) for t in ts),
        }
        for k in keys:
            v = _vals(ts, f"test_{k}")
            row[f"{k}_mean"], row[f"{k}_std"], row[f"{k}_median"] = _stat(v, "mean"), _stat(v, "std"), _stat(v, "median")
        for k in empty_names():
            row[k] = float(np.nansum(_vals(ts, f"test_{k}")))
        for k in ("best_step", "stopped_step", "steps_to_95pct", "val_dice_best"):
            v = _vals(ts, k)
            row[f"{k}_median"], row[f"{k}_min"], row[f"{k}_max"] = _stat(v, "median"), _stat(v, "min"), _stat(v, "max")
            row[f"{k}_mean"] = _stat(v, "mean")
        row["converged"] = int(np.nansum(_vals(ts, "converged")))
        capped = [t for t in ts if t["metrics"].get("converged", 1.0) == 0.0]
        row["late_gain_max"] = _stat(_vals(capped, "val_gain_last_window"), "max") if capped else float("nan")
        rows.append(row)
    return rows


# -- markdown -----------------------------------------------------------------------------------
def _pm(r: dict, k: str, digits: int = 3) -> str:
    m, s = r[f"{k}_mean"], r[f"{k}_std"]
    return "n/a" if not math.isfinite(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _md(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _n(r: dict) -> str:
    return f"all ({r['n_subjects']:.0f})" if r["n_train"] == "all" else str(r["n_train"])


def _f(v: float, digits: int = 3, sign: bool = False) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def results_markdown(rows: Sequence[dict], failure_dice: float = 0.5) -> str:
    """Mean ± std over seeds (median beside), failed trials, HD95 over the defined cases."""
    head = ["method", "N", "seeds", f"failed (Dice < {failure_dice:g})", "Dice LV", "Dice Myo", "Dice RV",
            "Dice mean", "Dice median", "HD95 mean (mm)", "HD95 undefined (cases)"]
    body = []
    for r in rows:
        empty = int(sum(r[k] for k in empty_names()))
        body.append([r["method"], _n(r), str(r["n_seeds"]), str(r["failed"]), _pm(r, "dice_lv_cavity"),
                     _pm(r, "dice_lv_myocardium"), _pm(r, "dice_rv_cavity"), _pm(r, "dice_mean"),
                     _f(r["dice_mean_median"]), _pm(r, "hd95_mean", 2), str(empty)])
    return _md(head, body)


def convergence_markdown(rows: Sequence[dict]) -> str:
    head = ["method", "N", "seeds", "steps to best val Dice: median [min-max]", "steps to 95% of best (median)",
            "stopped by patience", "best val Dice (mean)"]
    body = [[r["method"], _n(r), str(r["n_seeds"]),
             f"{_f(r['best_step_median'], 0)} [{_f(r['best_step_min'], 0)}-{_f(r['best_step_max'], 0)}]",
             _f(r["steps_to_95pct_median"], 0), f"{r['converged']}/{r['n_seeds']}", _f(r["val_dice_best_mean"])]
            for r in rows]
    return _md(head, body)


def paired_markdown(rows: Sequence[dict], confidence: float = 0.95) -> str:
    pct = f"{confidence * 100:g}%"
    head = ["method", "N", "seeds", "Δ Dice vs scratch (mean of seeds)", f"{pct} CI, hierarchical",
            f"{pct} CI, flat (pairs)", "p (boot)", "p (Holm)", "seeds W/T/L", "pairs W/T/L",
            "failed: method / scratch", "Δ without failed seeds", "Δ steps to best", "reading"]
    body = []
    for r in rows:
        body.append([
            r["method"], str(r["n_train"]), str(r["n_seeds"]), _f(r["mean_diff"], 4, True),
            f"[{_f(r['ci_low'], 4, True)}, {_f(r['ci_high'], 4, True)}]",
            f"[{_f(r['flat_ci_low'], 4, True)}, {_f(r['flat_ci_high'], 4, True)}]",
            _f(r["p_boot"], 3), _f(r["p_holm"], 3),
            f"{r['seed_wins']}/{r['seed_ties']}/{r['seed_losses']}",
            f"{r['pair_wins']}/{r['pair_ties']}/{r['pair_losses']}",
            f"{r['failed_method']} / {r['failed_scratch']}",
            f"{_f(r['clean_mean_diff'], 4, True)} ({r['clean_seeds']} seeds)",
            _f(r["steps_to_best_diff"], 0, True), r["note"],
        ])
    return _md(head, body)


def clinical_markdown(rows: Sequence[dict]) -> str:
    """Mean absolute error (bias = mean signed error, prediction - reference), means over seeds."""
    head = ["method", "N"] + [f"{CLINICAL_LABELS[m]} MAE (bias)" for m in CLINICAL]
    body = [[r["method"], _n(r)] + [f"{_f(r[f'{m}_mae_mean'], 1)} ({_f(r[f'{m}_bias_mean'], 1, True)})"
                                    for m in CLINICAL] for r in rows]
    return _md(head, body)


def regions_markdown(rows: Sequence[dict]) -> str:
    """Mean (median) over seeds; label pixels the network's input grid did not cover."""
    head = (["method", "N", "Dice ED", "Dice ES"] + [f"Dice {r}" for r in REGIONS]
            + ["label px outside the input: LV / Myo / RV"])
    body = []
    for r in rows:
        cells = [r["method"], _n(r)]
        for k in ["dice_ed", "dice_es"] + [f"dice_{x}" for x in REGIONS]:
            cells.append(f"{_f(r[f'{k}_mean'])} ({_f(r[f'{k}_median'])})")
        cells.append(" / ".join(f"{100 * r[f'lost_frac_{s}_mean']:.2f}%" if math.isfinite(r[f"lost_frac_{s}_mean"])
                                else "n/a" for s in STRUCTURES.values()))
        body.append(cells)
    return _md(head, body)


def convergence_summary(rows: Sequence[dict], cap: int, failure_dice: float = 0.5) -> str:
    """Plain sentences per (method, N): did every trial converge (stop on its own before the cap),
    and did any fail; read before the Dice table, so an unconverged or failed baseline is never
    taken for a result."""
    lines = []
    for r in rows:
        n, k = r["n_seeds"], r["converged"]
        head = f"{r['method']} N={r['n_train']}: "
        if k == n:
            text = (f"converged in {k}/{n} trials (validation Dice stopped improving; best at step "
                    f"{_f(r['best_step_median'], 0)} median, cap {cap})")
        else:
            gain = r.get("late_gain_max", float("nan"))
            text = (f"NOT converged in {n - k}/{n} trials: validation Dice still improving at the {cap}-step cap"
                    + (f" (by at most {gain:+.4f} over the patience window before it)" if math.isfinite(gain) else "")
                    + "; those trials' Dice is a lower bound (raise finetune.steps to know more)")
        if r["failed"]:
            text += f"; {r['failed']} failed trial(s) (mean test Dice < {failure_dice:g})"
        lines.append(head + text)
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


def write_report(trials: Sequence[dict], folder: str | os.PathLike, stats: StatsConfig | None = None,
                 title: str = "Few-shot segmentation", cap: int | None = None) -> dict[str, Path]:
    """Every table (.md + .csv), trials.csv, per_subject.csv, the figures and, given the step cap,
    the convergence sentences (``summary.txt``); returns their paths."""
    from .figures import plot_bland_altman, plot_dice_vs_n, plot_validation_curves

    stats = stats or StatsConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = aggregate(trials, stats.failure_dice)
    paired = compare_to_scratch(trials, n_boot=stats.n_boot, confidence=stats.confidence, seed=stats.seed,
                                failure_dice=stats.failure_dice, tie_tolerance=stats.tie_tolerance)
    files: dict[str, Path] = {}

    def put(name: str, text: str) -> None:
        files[name.replace(".", "_")] = folder / name
        (folder / name).write_text(text)

    if cap is not None:
        put("summary.txt", convergence_summary(rows, cap, stats.failure_dice))
    put("results.csv", rows_csv(rows))
    put("results.md", results_markdown(rows, stats.failure_dice))
    put("convergence.md", convergence_markdown(rows))
    put("clinical.md", clinical_markdown(rows))
    put("regions.md", regions_markdown(rows))
    put("paired_vs_scratch.csv", rows_csv(paired))
    put("paired_vs_scratch.md", paired_markdown(paired, stats.confidence) if paired
        else "(no scratch baseline in the grid)\n")
    trial_rows = [{"method": method_name(t["init"], t["mode"]), "init": t["init"], "mode": t["mode"],
                   "n_train": t["n_train"], "seed": t["seed"], "n_train_subjects": t["n_train_subjects"],
                   "failed": failed(t, stats.failure_dice), "run_id": t.get("run_id", ""), **t["metrics"]}
                  for t in trials]
    put("trials.csv", rows_csv(trial_rows))
    put("per_subject.csv", rows_csv([{"method": method_name(t["init"], t["mode"]), "n_train": t["n_train"],
                                      "seed": t["seed"], **r} for t in trials for r in t["per_subject"]]))
    files["plot"] = plot_dice_vs_n(rows, folder / "dice_vs_n.png", title)
    files["validation_curves"] = plot_validation_curves(trials, folder / "validation_curves.png",
                                                        f"{title}: validation curves")
    for n in sorted({t["n_train"] for t in trials}, key=n_key):
        files[f"bland_altman_N{n}"] = plot_bland_altman(trials, n, folder / f"bland_altman_N{n}.png")
    return files
