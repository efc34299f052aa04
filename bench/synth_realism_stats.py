"""Image and label statistics of a synthetic cohort next to real ACDC cases, subject by subject.

What a few-shot segmenter has to generalise over, measured the same way on both (SA slices at ED
with an LV cavity of at least 60 pixels, on one stored grid; one value per subject, the median over
its slices; the table gives the 10th, 50th and 90th percentiles over subjects):

* pose: the direction from the LV-cavity to the RV-cavity centroid in the stored image (its
  circular s.d. over subjects; the mean direction is a display convention and differs by cohort);
* position: the LV-cavity centroid's distance from the image centre (mm);
* blood pool: the s.d. of the signal 3 mm inside the LV-cavity label over its median;
* contrast: myocardium and RV-cavity medians over the LV-cavity median, the RV's step above the
  myocardium over it; the step from the
  myocardium to a ring 1.5-4.5 mm outside the heart, and that ring's spread, over the LV median;
* shape: solidity (area over convex-hull area) of the LV and RV cavity labels; labelled SA slices.

    python bench/synth_realism_stats.py --version 4 --subjects 30 [--real ../shared/data/real/acdc-dev]

Stores are built under --home (default /tmp/cardiossl-realism) on first use with ``cardiossl synth``
and ``cardiossl ingest --layout acdc`` at 128 px and 1.5 mm, and reused.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull
from scipy.stats import circmean

from cardiossl.datasets.store import CohortStore

GRID, SPACING = 128, 1.5
MIN_LV_PX = 60


def _solidity(mask: np.ndarray) -> float:
    p = np.argwhere(mask)
    if len(p) < 30:
        return np.nan
    corners = np.concatenate([p + d for d in ((0, 0), (0, 1), (1, 0), (1, 1))])
    return float(mask.sum() / ConvexHull(corners).volume)


def subject_stats(store: CohortStore, sid: str) -> dict | None:
    rows = []
    slices = [d for d in store.subject_slices(sid) if d["view"] == "sa" and d["phase"] == "ed" and d["has_label"]]
    for d in slices:
        img, lab = store.read_slice(d["part"], d["row"])
        lv, myo, rv = lab == 1, lab == 2, lab == 3
        if lv.sum() < MIN_LV_PX or myo.sum() < MIN_LV_PX:
            continue
        heart = lab > 0
        ring = ndi.binary_dilation(heart, iterations=3) & ~ndi.binary_dilation(heart, iterations=1)
        core = ndi.binary_erosion(lv, iterations=2)
        b = float(np.median(img[lv]))
        lv_c = np.argwhere(lv).mean(0)
        r = {
            "angle": np.nan,
            "lv_offset_mm": float(np.linalg.norm(lv_c - (np.array(lab.shape) - 1) / 2) * store.spacing_mm),
            "blood_sd": float(np.std(img[core]) / b) if core.sum() > 20 else np.nan,
            "myo_over_blood": float(np.median(img[myo]) / b),
            "rv_over_lv_blood": float(np.median(img[rv]) / b) if rv.sum() > 30 else np.nan,
            "rv_over_myo": float((np.median(img[rv]) - np.median(img[myo])) / b) if rv.sum() > 30 else np.nan,
            "epi_step": float(abs(np.median(img[ring]) - np.median(img[myo])) / b),
            "ring_sd": float(np.std(img[ring]) / b),
            "lv_solidity": _solidity(lv),
            "rv_solidity": _solidity(rv),
        }
        if rv.sum() > 30:
            v = np.argwhere(rv).mean(0) - lv_c
            r["angle"] = float(np.arctan2(v[0], v[1]))
        rows.append(r)
    if not rows:
        return None
    out = {k: float(np.nanmedian([r[k] for r in rows])) if k != "angle" else None for k in rows[0]}
    a = np.array([r["angle"] for r in rows if np.isfinite(r["angle"])])
    out["angle"] = float(circmean(a, high=np.pi, low=-np.pi)) if len(a) else np.nan
    out["labelled_slices"] = float(len(slices))
    return out


def cohort_table(stats: list[dict]) -> dict:
    out = {}
    a = np.array([s["angle"] for s in stats if np.isfinite(s["angle"])])
    dev = np.degrees(np.angle(np.exp(1j * (a - circmean(a, high=np.pi, low=-np.pi)))))  # wrapped to +-180
    out["pose: LV-to-RV direction, s.d. (deg)"] = f"{dev.std():.0f}"
    for key, name, fmt in (("lv_offset_mm", "LV centre from image centre (mm)", ".0f"),
                           ("blood_sd", "blood-pool s.d. / LV blood", ".3f"),
                           ("myo_over_blood", "myocardium / LV blood", ".2f"),
                           ("rv_over_lv_blood", "RV blood / LV blood", ".2f"),
                           ("rv_over_myo", "(RV blood - myocardium) / LV blood", ".2f"),
                           ("epi_step", "epicardial step / LV blood", ".3f"),
                           ("ring_sd", "outside ring s.d. / LV blood", ".3f"),
                           ("lv_solidity", "LV cavity solidity", ".3f"),
                           ("rv_solidity", "RV cavity solidity", ".3f"),
                           ("labelled_slices", "labelled SA slices", ".0f")):
        v = np.array([s[key] for s in stats])
        p = np.nanpercentile(v, [10, 50, 90])
        out[name] = " / ".join(f"{x:{fmt}}" for x in p)
    return out


def _build(cmd: list[str], store: Path) -> None:
    if not (store / "zarr.json").exists():
        print("building", store, flush=True)
        subprocess.run(cmd, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", type=int, action="append", help="synthetic version(s) (default: 3 and 4)")
    ap.add_argument("--subjects", type=int, default=30)
    ap.add_argument("--real", default="../shared/data/real/acdc-dev")
    ap.add_argument("--home", default="/tmp/cardiossl-realism")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    columns = {}
    for v in args.version or [3, 4]:
        store = home / f"synth-v{v}-n{args.subjects}-{GRID}.zarr"
        _build([str(bin_dir / "cardiossl"), "synth", "--version", str(v), "--subjects", str(args.subjects), "--seed",
                "0", "--frames", "2", "--grid-size", str(GRID), "--spacing-mm", str(SPACING), "--workers",
                str(args.workers), "--out", str(store), "-q"], store)
        s = CohortStore(store)
        stats = [x for x in (subject_stats(s, sid) for sid in s.subject_ids()) if x is not None]
        columns[f"version {v} ({len(stats)})"] = cohort_table(stats)
    if Path(args.real).is_dir():
        store = home / f"acdc-{GRID}.zarr"
        _build([str(bin_dir / "cardiossl"), "ingest", args.real, "--out", str(store), "--layout", "acdc", "--grid-size",
                str(GRID), "--spacing-mm", str(SPACING), "-q"], store)
        s = CohortStore(store)
        stats = [x for x in (subject_stats(s, sid) for sid in s.subject_ids()) if x is not None]
        columns[f"ACDC ({len(stats)})"] = cohort_table(stats)
    else:
        print(f"no real cases at {args.real}: synthetic columns only", file=sys.stderr)
    names = list(next(iter(columns.values())))
    print("| statistic (p10 / p50 / p90 over subjects) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for n in names:
        print(f"| {n} | " + " | ".join(c[n] for c in columns.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
