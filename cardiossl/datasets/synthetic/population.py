"""Who the version-2 subjects are: five groups like ACDC's and the distribution of each measure.

Groups and their defining criteria follow the ACDC challenge (Bernard et al., "Deep learning
techniques for automatic MRI cardiac multi-structures segmentation and diagnosis", IEEE TMI 2018):

* ``NOR`` normal: LV EF > 50 %, wall < 12 mm. Volumes, EF and mass from the UK Biobank reference
  ranges of healthy Caucasian adults (Petersen et al., JCMR 2017: LVEDV 124 +- 21 ml in women,
  166 +- 32 ml in men; LVEF 51-72 %; RVEDV about 1.1 x LVEDV, RVEF 47-70 %); wall thickness 6-10 mm
  (Kawel-Boehm et al., JCMR 2015 and 2020, normal values for CMR);
* ``DCM`` dilated cardiomyopathy: LVEF < 40 % with a large, spherical LV (EDV 220-350 ml) and a thin wall;
* ``HCM`` hypertrophic cardiomyopathy: normal or high EF, several segments > 15 mm at ED (asymmetric
  septal in most, concentric otherwise), small cavity;
* ``MINF`` myocardial infarction: LVEF < 40 % with a regional abnormality: one coronary territory
  (LAD anteroseptal-apical, RCA inferior, LCx lateral) thinned and akinetic;
* ``RV`` abnormal right ventricle: RV cavity > 110 ml/m^2 (about 200-320 ml here) or RVEF < 40 %.

Overall the cohort spans LV EF 15-75 %, LV EDV 80-350 ml and ED wall thickness 5-20 mm. Group
proportions are set by the caller (``population={"NOR": 2, "DCM": 1, ...}``, weights, normalised);
the default is ACDC's equal split. Every number a subject draws here lands in its ``meta``.
"""

from __future__ import annotations

import numpy as np

GROUPS: tuple[str, ...] = ("NOR", "DCM", "HCM", "MINF", "RV")
DEFAULT_PROPORTIONS: dict[str, float] = {g: 1.0 / len(GROUPS) for g in GROUPS}

# (low, high) of uniform draws per group: LV EDV (ml), LV EF (%), ED wall (mm, remote myocardium),
# sphericity (2 x short radius / long length), MAPSE (mm, mitral annular plane systolic excursion),
# RV EDV as a multiple of LV EDV or absolute (ml), RV EF (%)
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "NOR": {"lv_edv": (95, 200), "lv_ef": (55, 72), "wall": (6.0, 10.0), "sphericity": (0.50, 0.62),
            "mapse": (12, 17), "rv_edv_ratio": (1.0, 1.2), "rv_ef": (50, 66)},
    "DCM": {"lv_edv": (220, 350), "lv_ef": (15, 38), "wall": (5.5, 8.0), "sphericity": (0.65, 0.85),
            "mapse": (5, 10), "rv_edv_ratio": (0.55, 0.8), "rv_ef": (25, 55)},
    "HCM": {"lv_edv": (80, 150), "lv_ef": (60, 75), "wall": (10.0, 13.0), "sphericity": (0.45, 0.60),
            "mapse": (8, 13), "rv_edv_ratio": (1.0, 1.3), "rv_ef": (50, 66)},
    "MINF": {"lv_edv": (150, 260), "lv_ef": (20, 40), "wall": (7.0, 11.0), "sphericity": (0.55, 0.72),
             "mapse": (6, 11), "rv_edv_ratio": (0.6, 0.9), "rv_ef": (40, 60)},
    "RV": {"lv_edv": (90, 170), "lv_ef": (50, 68), "wall": (6.0, 10.0), "sphericity": (0.50, 0.62),
           "mapse": (11, 16), "rv_edv": (200, 320), "rv_ef": (20, 45)},
}
HCM_MAX_WALL = (15.0, 20.0)
INFARCT_WALL = (5.0, 6.5)  # thinned infarct wall at ED (mm)
TERRITORIES = {"LAD": (70.0, 0.55), "RCA": (-95.0, 0.30), "LCx": (190.0, 0.15)}
"""Coronary territory: centre angle (deg, from the septal direction towards anterior) and probability."""


def normalise_population(population: dict | None) -> dict[str, float]:
    """Group weights -> proportions summing to 1; ValueError naming unknown groups or bad weights."""
    if population is None:
        return dict(DEFAULT_PROPORTIONS)
    if not isinstance(population, dict) or not population:
        raise ValueError(f"population must map group names {list(GROUPS)} to weights, got {population!r}")
    unknown = sorted(set(population) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; the groups are {list(GROUPS)} (ACDC's)")
    weights = {}
    for g, w in population.items():
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise ValueError(f"weight of group {g!r} must be a number, got {w!r}") from None
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"weight of group {g!r} must be a finite number >= 0, got {w}")
        weights[g] = w
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("group weights sum to 0; give at least one group a positive weight")
    return {g: weights.get(g, 0.0) / total for g in GROUPS}


def draw_group(rng: np.random.Generator, proportions: dict[str, float]) -> str:
    p = np.array([proportions[g] for g in GROUPS], dtype=np.float64)
    return GROUPS[int(rng.choice(len(GROUPS), p=p / p.sum()))]


def draw_phenotype(rng: np.random.Generator, group: str) -> dict:
    """The measures a subject of ``group`` is built to have (JSON-able; targets, not measurements)."""
    r = _RANGES[group]
    u = rng.uniform
    ph = {
        "group": group,
        "lv_edv_ml": u(*r["lv_edv"]),
        "lv_ef": u(*r["lv_ef"]) / 100.0,
        "wall_mm": u(*r["wall"]),
        "sphericity": u(*r["sphericity"]),
        "mapse_mm": u(*r["mapse"]),
        "rv_ef": u(*r["rv_ef"]) / 100.0,
        "hypertrophy": None,
        "infarct": None,
    }
    ph["rv_edv_ml"] = u(*r["rv_edv"]) if "rv_edv" in r else ph["lv_edv_ml"] * u(*r["rv_edv_ratio"])
    if group == "HCM":
        concentric = rng.random() < 0.3
        ph["hypertrophy"] = {
            "pattern": "concentric" if concentric else "septal",
            "max_wall_mm": u(*HCM_MAX_WALL),
            "centre_deg": u(-20.0, 30.0),  # septal (towards the RV), anteroseptal at most
            "kappa": u(1.5, 3.0),  # von Mises concentration: the width of the thickened region
        }
    if group == "MINF":
        names = list(TERRITORIES)
        name = names[int(rng.choice(len(names), p=[TERRITORIES[n][1] for n in names]))]
        apical = name == "LAD"
        ph["infarct"] = {
            "territory": name,
            "centre_deg": TERRITORIES[name][0] + u(-20.0, 20.0),
            "kappa": u(4.0, 10.0),  # sector about 60-110 degrees wide
            "depth_from": u(0.35, 0.55) if apical else u(0.0, 0.2),  # normalised base (0) -> apex (1)
            "depth_to": 1.0 if apical else u(0.6, 0.9),
            "wall_mm": u(*INFARCT_WALL),
            "akinesia": u(0.75, 1.0),  # 1: the sector does not move inwards at all
            "transmural_fraction": u(0.5, 1.0),
        }
    return ph
