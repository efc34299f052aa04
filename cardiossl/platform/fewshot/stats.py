"""Statistics of the study with training runs as the unit, and model selection: pure functions of
trial results (no Ray, no MLflow).

For one seed every method sees the same training and test subjects, so a method is compared with
scratch per (seed, test subject). Those pairs are not independent: the subjects of one seed share
one trained network, and a seed whose network failed moves all of them at once. Treating the
pairs as independent (a flat bootstrap, a Wilcoxon test over pairs) is pseudo-replication. So:

* the estimate is the mean over seeds of each seed's mean difference (every training run weighs
  the same);
* its CI comes from a two-level (hierarchical) bootstrap: resample seeds (training runs) with
  replacement, then test subjects within each drawn seed (Saravanan, Berman & Sober, "Application
  of the hierarchical bootstrap to multi-level data in neuroscience", NBDC 2020), and the p-value
  is the two-sided share of bootstrap means on the other side of 0 from that same distribution;
* p-values are Holm-corrected across every comparison in the table (Holm, Scand J Stat 1979; not
  in scipy.stats, whose ``false_discovery_control`` controls the FDR instead);
* a seed-level Wilcoxon signed-rank test (scipy.stats) is reported beside it; with five seeds its
  smallest two-sided p is 0.0625, which is the honest limit of five training runs;
* wins, ties (|difference| <= ``tie_tolerance``) and losses are counted per seed and per pair;
* a trial whose mean test Dice is below ``failure_dice`` is a failed trial; the difference is
  also given over the seeds where neither method failed, and a comparison that is significant
  only because of failed baseline seeds is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..config import SCRATCH


def method_name(init: str, mode: str) -> str:
    return SCRATCH if init == SCRATCH else f"{init}/{mode}"


def n_key(n) -> float:
    return math.inf if n == "all" else float(n)


# -- resampling ---------------------------------------------------------------------------------
def hierarchical_bootstrap(groups: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap means of the mean of group means: seeds (groups) drawn with replacement,
    then members (test subjects) drawn with replacement within each drawn group."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    s = len(groups)
    if s == 0:
        return np.full(n_boot, np.nan)
    pick = rng.integers(0, s, size=(n_boot, s))
    slot_means = np.empty((n_boot, s))
    for g, vals in enumerate(groups):
        draws = vals[rng.integers(0, len(vals), size=(n_boot, s, len(vals)))].mean(axis=2)
        mask = pick == g
        slot_means[mask] = draws[mask]
    return slot_means.mean(axis=1)


def flat_bootstrap(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means resampling every value independently (pairs as if independent): shown beside
    the hierarchical CI so the difference is visible, never used for a claim."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.full(n_boot, np.nan)
    return v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)


def bootstrap_p(boot: np.ndarray) -> float:
    """Two-sided bootstrap p of "no difference": twice the smaller share of bootstrap means at or
    beyond 0 on either side, with the +1 correction that keeps it above 0 (Davison & Hinkley 1997)."""
    b = np.asarray(boot, dtype=np.float64)
    b = b[np.isfinite(b)]
    if b.size == 0:
        return float("nan")
    k = min(int((b <= 0).sum()), int((b >= 0).sum()))
    return float(min(1.0, 2.0 * (k + 1) / (b.size + 1)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error); NaN entries stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def _ci(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    b = boot[np.isfinite(boot)]
    if b.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(b, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _wtl(diff: np.ndarray, tol: float) -> tuple[int, int, int]:
    d = np.asarray(diff, dtype=np.float64)
    return int((d > tol).sum()), int((np.abs(d) <= tol).sum()), int((d < -tol).sum())


# -- the comparisons ----------------------------------------------------------------------------
def failed(trial: Mapping, threshold: float) -> bool:
    """A failed trial: its mean test Dice is below ``threshold`` (or undefined)."""
    v = trial["metrics"].get("test_dice_mean", float("nan"))
    return not (math.isfinite(v) and v >= threshold)


def _cells(trials: Sequence[dict]) -> dict[tuple[str, Any], dict[int, dict]]:
    out: dict[tuple[str, Any], dict[int, dict]] = {}
    for t in trials:
        out.setdefault((method_name(t["init"], t["mode"]), t["n_train"]), {})[int(t["seed"])] = t
    return out


def _seed_diffs(a: Mapping, b: Mapping, metric: str) -> np.ndarray:
    va = {str(r["subject_id"]): float(r[metric]) for r in a["per_subject"]}
    vb = {str(r["subject_id"]): float(r[metric]) for r in b["per_subject"]}
    keys = sorted(k for k in set(va) & set(vb) if math.isfinite(va[k]) and math.isfinite(vb[k]))
    return np.array([va[k] - vb[k] for k in keys])


def compare_to_scratch(trials: Sequence[dict], *, metric: str = "dice_mean", n_boot: int = 10000,
                       confidence: float = 0.95, seed: int = 0, failure_dice: float = 0.5,
                       tie_tolerance: float = 0.005) -> list[dict]:
    """Per (method, N) against scratch at the same N, paired by seed and test subject (module
    docstring). Rows sorted by method then N; ``p_holm`` adjusts ``p_boot`` across all rows."""
    from scipy.stats import wilcoxon

    cells = _cells(trials)
    rows = []
    for (method, n), by_seed in sorted(cells.items(), key=lambda kv: (kv[0][0], n_key(kv[0][1]))):
        base = cells.get((SCRATCH, n))
        if method == SCRATCH or base is None:
            continue
        seeds = sorted(set(by_seed) & set(base))
        diffs = {s: _seed_diffs(by_seed[s], base[s], metric) for s in seeds}
        seeds = [s for s in seeds if diffs[s].size]
        if not seeds:
            continue
        rng = np.random.default_rng([seed, len(rows), 0xB007])
        seed_means = np.array([diffs[s].mean() for s in seeds])
        boot = hierarchical_bootstrap([diffs[s] for s in seeds], n_boot, rng)
        flat = flat_bootstrap(np.concatenate([diffs[s] for s in seeds]), n_boot, rng)
        fail_m = [s for s in seeds if failed(by_seed[s], failure_dice)]
        fail_b = [s for s in seeds if failed(base[s], failure_dice)]
        clean = [s for s in seeds if s not in fail_m and s not in fail_b]
        clean_boot = hierarchical_bootstrap([diffs[s] for s in clean], n_boot, rng)
        pairs = np.concatenate([diffs[s] for s in seeds])
        if len(seeds) >= 2 and np.any(seed_means != 0):
            p_seed = float(wilcoxon(seed_means, zero_method="wilcox", alternative="two-sided").pvalue)
        else:
            p_seed = float("nan")
        steps = [by_seed[s]["metrics"].get("best_step", np.nan) - base[s]["metrics"].get("best_step", np.nan)
                 for s in seeds]
        row = {
            "method": method, "n_train": n, "metric": metric, "n_seeds": len(seeds), "n_pairs": int(pairs.size),
            "mean_diff": float(seed_means.mean()), "median_seed_diff": float(np.median(seed_means)),
            "ci_low": _ci(boot, confidence)[0], "ci_high": _ci(boot, confidence)[1],
            "flat_ci_low": _ci(flat, confidence)[0], "flat_ci_high": _ci(flat, confidence)[1],
            "p_boot": bootstrap_p(boot), "wilcoxon_seed_p": p_seed,
            "seed_wins": 0, "seed_ties": 0, "seed_losses": 0, "pair_wins": 0, "pair_ties": 0, "pair_losses": 0,
            "failed_method": len(fail_m), "failed_scratch": len(fail_b),
            "clean_seeds": len(clean),
            "clean_mean_diff": float(np.mean([diffs[s].mean() for s in clean])) if clean else float("nan"),
            "clean_ci_low": _ci(clean_boot, confidence)[0], "clean_ci_high": _ci(clean_boot, confidence)[1],
            "steps_to_best_diff": float(np.nanmean(steps)) if np.any(np.isfinite(steps)) else float("nan"),
        }
        row["seed_wins"], row["seed_ties"], row["seed_losses"] = _wtl(seed_means, tie_tolerance)
        row["pair_wins"], row["pair_ties"], row["pair_losses"] = _wtl(pairs, tie_tolerance)
        rows.append(row)
    for r, p in zip(rows, holm([r["p_boot"] for r in rows])):
        r["p_holm"] = p
        r["note"] = _note(r, 1 - confidence, tie_tolerance)
    return rows


def _note(r: Mapping, alpha: float, tie: float) -> str:
    """What a reader must know about a row: a result carried by failed trials, or no difference.

    Without the failed seeds, a difference still stands when its hierarchical CI excludes 0 and it
    is larger than a tie."""
    sig = math.isfinite(r["p_holm"]) and r["p_holm"] < alpha
    clean_holds = r["clean_seeds"] > 0 and (r["clean_ci_low"] > 0 or r["clean_ci_high"] < 0) and abs(
        r["clean_mean_diff"]) > tie
    if not sig:
        return "no difference shown"
    if abs(r["mean_diff"]) <= tie:
        return "level (within the tie tolerance)"
    if r["failed_scratch"] and not clean_holds:
        return f"only through {r['failed_scratch']} failed scratch seed(s)"
    if r["failed_method"] and not clean_holds:
        return f"only through {r['failed_method']} failed seed(s) of this method"
    return "better" if r["mean_diff"] > 0 else "worse"


def champion_key(trial: dict) -> tuple:
    """Model selection on validation Dice only (ties: more training subjects, then lower seed)."""
    v = trial["metrics"].get("val_dice_best", float("nan"))
    return (-math.inf if math.isnan(v) else v, trial["n_train_subjects"], -int(trial["seed"]))
