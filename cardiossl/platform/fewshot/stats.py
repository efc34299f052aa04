"""Paired statistics of the study and model selection: pure functions of trial results (no Ray, no MLflow).

For one seed every method sees the same training and test subjects, so the difference to scratch
is paired per (seed, test subject): a paired bootstrap CI of the mean difference (Efron &
Tibshirani 1993) and a Wilcoxon signed-rank test (scipy.stats)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import SCRATCH


def method_name(init: str, mode: str) -> str:
    return SCRATCH if init == SCRATCH else f"{init}/{mode}"



def n_key(n) -> float:
    return math.inf if n == "all" else float(n)



def paired_vs_scratch(trials: Sequence[dict], *, metric: str = "dice_mean", n_boot: int = 10000,
                      confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Per (method, N): paired differences method - scratch over (seed, test subject) pairs.

    Returns mean difference, paired-bootstrap CI (resampling pairs with replacement), Wilcoxon
    signed-rank p (two-sided; NaN when every difference is 0 or fewer than 2 pairs) and the share
    of pairs where the method wins."""
    from scipy.stats import wilcoxon

    per: dict[tuple[str, Any], dict[tuple[int, str], float]] = {}
    for t in trials:
        key = (method_name(t["init"], t["mode"]), t["n_train"])
        d = per.setdefault(key, {})
        for r in t["per_subject"]:
            d[(int(t["seed"]), str(r["subject_id"]))] = float(r[metric])
    out = []
    for (method, n), values in sorted(per.items(), key=lambda kv: (kv[0][0], n_key(kv[0][1]))):
        if method == SCRATCH or (SCRATCH, n) not in per:
            continue
        base = per[(SCRATCH, n)]
        pairs = sorted(set(values) & set(base))
        if not pairs:
            continue
        diff = np.array([values[p] - base[p] for p in pairs])
        rng = np.random.default_rng([seed, len(pairs)])
        boot = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
        alpha = (1 - confidence) / 2
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        if len(diff) >= 2 and np.any(diff != 0):
            p = float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
        else:
            p = float("nan")
        out.append({
            "method": method, "n_train": n, "metric": metric, "n_pairs": len(pairs),
            "n_seeds": len({s for s, _ in pairs}), "mean_diff": float(diff.mean()),
            "ci_low": float(lo), "ci_high": float(hi), "wilcoxon_p": p,
            "win_rate": float(np.mean(diff > 0)),
        })
    return out



def champion_key(trial: dict) -> tuple:
    """Model selection on validation Dice only (ties: more training subjects, then lower seed)."""
    v = trial["metrics"].get("val_dice_best", float("nan"))
    return (-math.inf if math.isnan(v) else v, trial["n_train_subjects"], -int(trial["seed"]))
