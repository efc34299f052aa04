"""How a version-2 subject is scanned: a site's protocol and a radiographer's imperfect planning.

Standard cine planning (Kramer et al., "Standardized cardiovascular magnetic resonance imaging
(CMR) protocols: 2020 update", JCMR 2020): long-axis views are planned through the LV apex and the
mitral valve centre, the short-axis (SA) stack perpendicular to the long axis from the mitral
annulus to the apex, 6-8 mm slices with 2-4 mm gaps, one or two slices per breath-hold. In practice
every step is judged by eye, so here each is drawn as a perturbation of the true anatomy:

* SA stack normal tilted off the true LV axis by ``tilt`` (half-normal, clipped to 0-15 deg; a real
  M&Ms-2 exam: 3.6 deg) towards a uniform azimuth;
* each long-axis plane turned about the LV axis from its ideal angle (normal, clipped to +-20 deg),
  tilted out of the axis (clipped to +-12 deg) and offset from the axis at mid-cavity (normal,
  clipped to +-15 mm; real exams: 4.1-4.2 mm, one UK Biobank subject about 15 mm);
* a per-subject planning quality ``q`` (log-normal) scales those spreads, giving the heavy tail of
  real cohorts;
* the stack starts 1-3 slices above the mitral annulus (through atria, valves and LVOT) and ends at
  or past the epicardial apex;
* breath-hold misregistration: each breath-hold (1-3 consecutive SA slices) finds the anatomy
  displaced by an in-plane vector (clipped to 5 mm) and a through-plane shift (clipped to 3 mm)
  from where it was when the long-axis views were planned; the recorded planes do not move (McLeish
  et al., IEEE TMI 2002, measured breath-hold heart position differences of several mm);
* field of view, matrix, pixel size and slice thickness by "site" (protocol families like UK Biobank
  (Petersen et al., JCMR 2016), ACDC, Sunnybrook and M&Ms vendors), the heart off the image centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import Plane
from .heart import Heart
from .v1 import _in_plane_rotate, _plane_centred, _rotate, _unit

SITES: dict[str, dict] = {
    # pixel (mm), matrix (rows, cols) ranges, SA thickness and inter-slice gap (mm), LA thickness,
    # phase-encoding axis, circular field of view, interpolation (acquired / reconstructed pixel size)
    "ukbb_like": {"vendor": "siemens", "field_t": 1.5, "pixel": (1.7, 1.9), "rows": (180, 200),
                  "cols": (200, 216), "thick": (8.0, 8.0), "gap": (2.0, 2.0), "la_thick": (6.0, 6.0),
                  "pe": "rows", "circle": False, "interp": (1.0, 1.0)},
    "acdc_like": {"vendor": "siemens", "field_t": 3.0, "pixel": (1.3, 1.6), "rows": (200, 256),
                  "cols": (200, 232), "thick": (6.0, 8.0), "gap": (0.0, 4.0), "la_thick": (6.0, 8.0),
                  "pe": "cols", "circle": False, "interp": (1.2, 1.6)},
    "sunnybrook_like": {"vendor": "ge", "field_t": 1.5, "pixel": (1.3, 1.45), "rows": (256, 256),
                        "cols": (256, 256), "thick": (8.0, 8.0), "gap": (2.0, 2.0), "la_thick": (8.0, 8.0),
                        "pe": "cols", "circle": True, "interp": (1.3, 1.6)},
    "mnms_like": {"vendor": "philips", "field_t": 1.5, "pixel": (1.2, 1.5), "rows": (208, 256),
                  "cols": (208, 256), "thick": (8.0, 10.0), "gap": (0.0, 2.0), "la_thick": (8.0, 10.0),
                  "pe": "rows", "circle": False, "interp": (1.3, 1.8)},
}
# spreads (per unit of planning quality q ~ LogNormal(0, QUALITY_SIGMA) clipped to QUALITY_RANGE) and caps
QUALITY_SIGMA, QUALITY_RANGE = 0.5, (0.3, 3.0)
TILT_SIGMA_DEG, TILT_MAX_DEG = 4.0, 15.0  # SA normal vs LV axis: half-normal
LA_ROT_SIGMA_DEG, LA_ROT_MAX_DEG = 6.0, 20.0  # about the LV axis: normal
LA_TILT_SIGMA_DEG, LA_TILT_MAX_DEG = 3.0, 12.0  # out of the LV axis: normal
LA_OFFSET_SIGMA_MM, LA_OFFSET_MAX_MM = 4.0, 15.0  # from the LV axis at mid-cavity: normal
# breath-holds: per subject, in-plane spread ~ U(MISREG_IN_PLANE_SIGMA), through-plane ~ U(MISREG_THROUGH_SIGMA)
MISREG_IN_PLANE_SIGMA, MISREG_IN_PLANE_MAX_MM = (0.3, 2.5), 5.0
MISREG_THROUGH_SIGMA, MISREG_THROUGH_MAX_MM = (0.2, 1.5), 3.0
GE_SA_TURN_DEG = 20.0
LA_IDEAL_DEG = {"4ch": -10.0, "2ch": 95.0}
"""Ideal angle of each long-axis plane about the LV axis from ``s``; the 3ch follows the LVOT."""


@dataclass
class SlicePlan:
    view: str
    index: int
    plane: Plane
    shape: tuple[int, int]
    thickness: float
    displacement: np.ndarray = field(default_factory=lambda: np.zeros(3))  # anatomy moved by (LPS mm)


def _clip_norm(v: np.ndarray, cap: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v if n <= cap else v * (cap / n)


def _grid(rng: np.random.Generator, site: dict) -> tuple[tuple[int, int], tuple[float, float]]:
    px = float(rng.uniform(*site["pixel"]))
    rows, cols = (int(rng.integers(-(-lo // 8), hi // 8 + 1)) * 8 for lo, hi in (site["rows"], site["cols"]))
    return (rows, cols), (px, px)


def _project(v, n: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return _unit(v - (v @ n) * n)


def _display_axes(n: np.ndarray, kind: str, vendor: str, rot: float) -> tuple[np.ndarray, np.ndarray]:
    """(row_dir, col_dir) of a slice with normal ``n`` as scanners orient them, turned by ``rot``.

    Short axis: anterior up (column direction = patient posterior projected into the plane), as in
    Siemens/Philips DICOM, turned a further ``GE_SA_TURN_DEG`` at GE-like sites. (The real GE exam in
    ``../shared/data/real`` is turned about 135 degrees; a quarter of the cohort shown that way made
    few-shot training fail on exactly those subjects whatever N, an orientation problem rather than
    an anatomical one, so sites differ in appearance and field of view, not in display convention.)
    Long axis: the reference axis of the nearest standard plane (patient posterior for
    sagittal-like planes, patient left otherwise) runs along the rows, and feet are down, as in the
    real bivme (Siemens) exam.
    """
    if kind == "sa":
        col = _project([0.0, 1.0, 0.0], n)
        row = np.cross(col, n)
        if vendor == "ge":
            rot = rot + np.deg2rad(GE_SA_TURN_DEG)
    else:
        ref = [0.0, 1.0, 0.0] if abs(n[0]) >= max(abs(n[1]), abs(n[2])) else [1.0, 0.0, 0.0]
        row = _project(ref, n)
        col = np.cross(n, row)
        if col[2] > 0:
            col = -col
    return _in_plane_rotate(row, col, rot)


def draw_site(rng: np.random.Generator) -> str:
    names = sorted(SITES)
    return names[int(rng.integers(len(names)))]


PLAN_DEFAULTS: dict = {
    "display_sd_deg": 8.0,  # in-plane turn of the displayed SA image from the vendor's convention: normal
    "fov_jitter_mm": 8.0,  # field-of-view centre jitter (per axis): normal
}
"""The version-2 planning spreads; a later version passes ``options`` that replace some of these (each
scales the same draw, so every other draw of the planning stream is unchanged)."""


def plan_exam(heart: Heart, site_name: str, rng: np.random.Generator, breath: np.random.Generator,
              body_centre: np.ndarray, options: dict | None = None) -> tuple[list[SlicePlan], dict]:
    """SA stack and 2/3/4ch planes for ``heart`` at ``site_name``; (plans, meta with every perturbation)."""
    o = {**PLAN_DEFAULTS, **(options or {})}
    unknown = set(o) - set(PLAN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown planning options {sorted(unknown)}; known: {sorted(PLAN_DEFAULTS)}")
    site = SITES[site_name]
    u = rng.uniform
    q = float(np.clip(rng.lognormal(0.0, QUALITY_SIGMA), *QUALITY_RANGE))
    w = heart.w
    # --- SA stack: planned normal tilted off the true axis
    tilt = float(min(abs(rng.normal(0.0, TILT_SIGMA_DEG * q)), TILT_MAX_DEG))
    azim = u(0.0, 2 * np.pi)
    perp = np.cos(azim) * heart.s + np.sin(azim) * heart.a
    n = _unit(_rotate(w, np.cross(w, perp), np.deg2rad(tilt)))
    thick = u(*site["thick"])
    gap = u(*site["gap"])
    spacing = thick + gap
    shape, px = _grid(rng, site)
    display_deg = float(rng.normal(0.0, 1.0)) * o["display_sd_deg"]
    row_dir, col_dir = _display_axes(-n, "sa", site["vendor"], np.deg2rad(display_deg))
    # stack extent: 1-3 slices above the mitral plane, the last at or past the epicardial apex
    n_above = int(rng.integers(1, 4))
    d0 = -(n_above - 1 + u(0.2, 0.8)) * spacing
    apex_depth = float((heart.apex - heart.base) @ n)
    n_sa = int(np.ceil((apex_depth + u(0.0, 0.6) * spacing - d0) / spacing)) + 1
    # field of view centre: between the heart and the chest centre, plus jitter (the heart off-centre)
    lv_c = heart.lv_centre()
    toward = np.array([body_centre[0], body_centre[1], lv_c[2]]) - lv_c
    fov_c = lv_c + u(0.0, 0.35) * toward + rng.normal(0.0, 1.0, 3) * o["fov_jitter_mm"]
    fov_c = fov_c - ((fov_c - heart.base) @ n) * n  # on the plane through the base
    # breath-holds: groups of 1-3 consecutive slices share one displacement
    per_hold = int(breath.integers(1, 4))
    s_in, s_thru = breath.uniform(*MISREG_IN_PLANE_SIGMA), breath.uniform(*MISREG_THROUGH_SIGMA)
    holds = []
    for _ in range(-(-n_sa // per_hold)):
        v_in = _clip_norm(breath.normal(0.0, s_in, 2), MISREG_IN_PLANE_MAX_MM)
        v_th = float(np.clip(breath.normal(0.0, s_thru), -MISREG_THROUGH_MAX_MM, MISREG_THROUGH_MAX_MM))
        holds.append(v_in[0] * row_dir + v_in[1] * col_dir + v_th * n)
    plans = []
    for k in range(n_sa):
        centre = fov_c + (d0 + k * spacing) * n
        plane = _plane_centred(centre, row_dir, col_dir, px, shape)
        plans.append(SlicePlan("sa", k, plane, shape, thick, holds[k // per_hold]))
    disp = np.array([p.displacement for p in plans])
    sa_meta = {
        "normal": n.tolist(),
        "tilt_deg": tilt,
        "tilt_azimuth_deg": float(np.rad2deg(azim)),
        "thickness_mm": thick,
        "gap_mm": gap,
        "spacing_mm": spacing,
        "n_slices": n_sa,
        "n_above_base": n_above,
        "first_depth_mm": d0,
        "apex_depth_mm": apex_depth,
        "last_depth_mm": d0 + (n_sa - 1) * spacing,
        "matrix": list(shape),
        "pixel_mm": list(px),
        "fov_mm": [shape[0] * px[0], shape[1] * px[1]],
        "fov_centre_offset_mm": float(np.linalg.norm((fov_c - lv_c) - ((fov_c - lv_c) @ n) * n)),
        "slices_per_breath_hold": per_hold,
        "misregistration_mm": disp.tolist(),
        "misregistration_in_plane_mm": np.linalg.norm(disp - np.outer(disp @ n, n), axis=1).tolist(),
        "misregistration_through_plane_mm": (disp @ n).tolist(),
    }
    if options:  # a later version's: version-2 meta stays as it was
        sa_meta["display_rotation_deg"] = display_deg

    # --- long-axis planes
    la_shape, la_px = _grid(rng, site)
    la_thick = u(*site["la_thick"])
    la_meta = {}
    for view in ("2ch", "3ch", "4ch"):
        ideal = heart.lvot_angle if view == "3ch" else np.deg2rad(LA_IDEAL_DEG[view] + u(-6.0, 6.0))
        rot_d = float(np.clip(rng.normal(0.0, LA_ROT_SIGMA_DEG * q), -LA_ROT_MAX_DEG, LA_ROT_MAX_DEG))
        tilt_d = float(np.clip(rng.normal(0.0, LA_TILT_SIGMA_DEG * q), -LA_TILT_MAX_DEG, LA_TILT_MAX_DEG))
        off = float(np.clip(rng.normal(0.0, LA_OFFSET_SIGMA_MM * q), -LA_OFFSET_MAX_MM, LA_OFFSET_MAX_MM))
        th = ideal + np.deg2rad(rot_d)
        d = np.cos(th) * heart.s + np.sin(th) * heart.a
        w_t = _rotate(w, d, np.deg2rad(tilt_d))
        normal = _unit(np.cross(w_t, d))
        pivot = lv_c + off * normal
        row_dir, col_dir = _display_axes(normal, "la", site["vendor"], np.deg2rad(rng.normal(0.0, 8.0)))
        centre = pivot + u(-10.0, 10.0) * w_t + u(-10.0, 10.0) * d
        plane = _plane_centred(centre, row_dir, col_dir, la_px, la_shape)
        plans.append(SlicePlan(view, 0, plane, la_shape, la_thick))
        la_meta[view] = {
            "ideal_angle_deg": float(np.rad2deg(ideal)),
            "rotation_deg": rot_d,
            "tilt_deg": tilt_d,
            "offset_mm": off,
            "normal": normal.tolist(),
        }
    meta = {
        "site": site_name,
        "interpolation": float(u(*site["interp"])),
        "vendor": site["vendor"],
        "field_strength_t": site["field_t"],
        "planning_quality": q,
        "sa": sa_meta,
        "la": la_meta,
        "la_thickness_mm": la_thick,
        "la_matrix": list(la_shape),
        "la_pixel_mm": list(la_px),
    }
    return plans, meta

