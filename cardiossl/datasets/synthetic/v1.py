"""Synthetic cardiac cine MR subjects with true scanner geometry: the embedded default cohort.

A heart is defined analytically in patient coordinates (DICOM LPS, mm) and *sampled like an exam*:
a short-axis (SA) stack perpendicular to the LV long axis plus 2-, 3- and 4-chamber long-axis (LA)
slices that contain that axis, each slice with its own plane. Every pixel is evaluated directly from
the implicit shapes at its world position (no 3-D volume), so the labels of two slices agree exactly
where their planes cross: the property the anatomical-position pretext (Bai et al., MICCAI 2019)
relies on, and what the geometry tests check.

Anatomy (local heart frame: ``s`` towards the RV, ``a`` anterior, ``w`` from LV base to apex):

* LV: a thick truncated ellipsoidal shell cut at the base plane (w = 0), the usual analytic LV model
  (e.g. the prolate-spheroid LV of Streeter & Hanna 1973), papillary muscles inside the cavity
  (labelled cavity, as in the UK Biobank protocol of Petersen et al. 2016);
* RV: an ellipsoid offset towards ``s`` minus the LV epicardium, so it wraps on the septum as a
  crescent; atria and aortic root above the base; epicardial fat;
* torso: body wall (subcutaneous fat, muscle), lungs, liver under a domed diaphragm, spine and
  descending aorta;
* contrast like balanced SSFP: bright blood and fat, dark myocardium, very dark lungs;
  a smooth multiplicative bias field (receive-coil shading) and Rician magnitude noise
  (Gudbjartsson & Patz 1995);
* cine: ED at frame 0, ES at ``es_frame``; at ES the base descends towards a fixed apex and the
  cavity shrinks radially while myocardial volume is conserved, so the wall thickens.

Slices have a slab thickness: each image averages ``n_sub`` sub-planes across the slab (partial
volume); labels are the truth at the slab centre plane. True volumes go into ``meta``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from ..geometry import Plane
from ..records import LA_VIEWS, SliceRecord, SubjectRecord

# Tissue classes (painter's order inside each group does the rest).
(
    AIR,
    SOFT,
    SUBCUT_FAT,
    MUSCLE,
    LUNG,
    LIVER,
    SPINE,
    VESSEL,
    EPI_FAT,
    HEART_WALL,  # RV free wall, atrial and aortic walls: myocardium-like, label background
    RV_CAV,
    LV_MYO,
    LV_CAV,
    LV_PAP,
    ATRIUM,
    AORTA,
) = range(16)
N_CLASSES = 16
NOT_HEART = 255
CLASS_TO_LABEL = np.zeros(256, dtype=np.uint8)
CLASS_TO_LABEL[[LV_CAV, LV_PAP]] = 1
CLASS_TO_LABEL[LV_MYO] = 2
CLASS_TO_LABEL[RV_CAV] = 3

DEFAULT_N_FRAMES = 4
LA_ANGLES_DEG = {"4ch": -10.0, "3ch": 45.0, "2ch": 95.0}
"""Nominal angle of each LA plane around the LV axis, from the septal direction ``s`` towards anterior."""

_TRAILING_INT = re.compile(r"(\d+)$")


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about unit ``axis`` by ``angle`` radians."""
    axis = _unit(axis)
    return v * np.cos(angle) + np.cross(axis, v) * np.sin(angle) + axis * (axis @ v) * (1 - np.cos(angle))


def _ellipsoid(q: np.ndarray, centre, semi) -> np.ndarray:
    """Inside test of an axis-aligned ellipsoid in local coordinates q (N, 3)."""
    acc = np.square((q[:, 0] - float(centre[0])) * (1.0 / float(semi[0])))
    acc += np.square((q[:, 1] - float(centre[1])) * (1.0 / float(semi[1])))
    acc += np.square((q[:, 2] - float(centre[2])) * (1.0 / float(semi[2])))
    return acc <= 1.0


def contraction(frame: int, n_frames: int, es_frame: int) -> float:
    """0 at ED, 1 at ES: a raised-cosine systole then diastole, a smooth stand-in for a volume curve."""
    t = frame / n_frames
    t_es = es_frame / n_frames
    if t <= t_es:
        return float(0.5 - 0.5 * np.cos(np.pi * t / t_es))
    return float(0.5 + 0.5 * np.cos(np.pi * (t - t_es) / (1.0 - t_es)))


def es_frame_for(n_frames: int) -> int:
    """End-systole at ~3/8 of the cycle (systole is shorter than diastole)."""
    if n_frames < 2:
        raise ValueError(f"n_frames must be at least 2 (ED and ES), got {n_frames}")
    return max(1, int(round(n_frames * 0.375)))


@dataclass(frozen=True)
class _Shape:
    """Heart shape at one point of the cycle (local lengths in mm)."""

    shift: float  # base descent along w since ED
    endo: tuple[float, float, float]  # LV cavity semi-axes (s, a, w)
    epi: tuple[float, float, float]
    rv: tuple[float, float, float]  # RV semi-axes; centre (rv_offset, 0, 0)
    pap_r: float


class SyntheticHeart:
    """One subject's anatomy: parameters drawn from ``rng``; classes and labels at world points."""

    def __init__(self, rng: np.random.Generator) -> None:
        u = rng.uniform
        # --- LV long axis: from base towards apex, pointing left, anterior and inferior (LPS).
        w = _unit([0.62, -0.55, -0.56])
        tilt_axis = _unit(np.cross(w, rng.normal(size=3)))
        w = _unit(_rotate(w, tilt_axis, np.deg2rad(u(0.0, 15.0))))
        right_anterior = _unit([-1.0, -1.0, 0.0])
        s = _unit(right_anterior - (right_anterior @ w) * w)
        s = _unit(_rotate(s, w, np.deg2rad(u(-10.0, 10.0))))
        a = np.cross(w, s)
        if a[1] > 0:  # make ``a`` point anterior (-y in LPS)
            a = -a
        self.s, self.a, self.w = s, a, w
        self.R = np.stack([s, a, w])  # local = (P - base) @ R.T
        self.base = np.array([u(0.0, 40.0), u(-30.0, 10.0), u(-40.0, 40.0)])

        # --- LV and RV at ED
        ai = u(23.0, 31.0)
        self.endo_ed = (ai, ai * u(0.9, 1.1), u(75.0, 95.0))
        self.wall_ed = u(7.0, 11.0)
        self.apex_wall_ratio = 0.8
        self.myo_volume = self._shell_volume(self.endo_ed, self.wall_ed)
        self.radial = u(0.18, 0.33)  # radial endocardial shortening at ES
        self.descent = u(0.08, 0.16) * self.endo_ed[2]  # base descent at ES (mm), apex fixed
        epi = self._epi(self.endo_ed, self.wall_ed)
        self.rv_offset = epi[0] * u(0.75, 0.95)
        self.rv_ed = (u(24.0, 32.0), epi[0] * u(1.25, 1.45), epi[2] * u(0.75, 0.85))
        self.rv_radial = u(0.15, 0.30)
        self.rv_wall = u(3.0, 4.0)
        self.fat = u(1.0, 4.0)
        self.pap_r = u(3.5, 5.0)
        self.pap_angles = np.deg2rad([135.0 + u(-15, 15), 235.0 + u(-15, 15)])
        # --- atria and aortic root above the base
        self.la_r = u(22.0, 28.0)
        self.ra_r = u(22.0, 28.0)
        self.la_c = np.array([-5.0, -15.0, -0.8 * self.la_r])
        self.ra_c = np.array([self.rv_offset + 5.0, -10.0, -0.8 * self.ra_r])
        th3 = np.deg2rad(LA_ANGLES_DEG["3ch"] + u(-8.0, 8.0))
        self.lvot_angle = th3
        d3 = np.array([np.cos(th3), np.sin(th3), 0.0])
        self.ao_r = u(11.0, 14.0)
        self.ao_p0 = 0.45 * ai * d3 + np.array([0.0, 0.0, 2.0])
        self.ao_dir = _unit(np.array([0.0, 0.0, -1.0]) + 0.5 * d3)
        self.ao_len = 60.0

        # --- torso (world coordinates)
        self.body_c = self.base + np.array([-u(20.0, 40.0), u(25.0, 40.0), 0.0])
        self.body_semi = (u(140.0, 180.0), u(105.0, 130.0))
        self.subcut = u(5.0, 20.0)
        self.muscle = u(8.0, 15.0)
        self.diaphragm_z = self.base[2] - u(65.0, 80.0)

        # --- contrast (relative to LV blood), bias field, noise
        myo = u(0.18, 0.30)
        fat = u(0.70, 0.95)
        lut = np.zeros(N_CLASSES, dtype=np.float32)
        lut[AIR] = 0.0
        lut[SOFT] = u(0.25, 0.40)
        lut[SUBCUT_FAT] = fat
        lut[MUSCLE] = u(0.18, 0.28)
        lut[LUNG] = u(0.03, 0.08)
        lut[LIVER] = u(0.25, 0.38)
        lut[SPINE] = u(0.30, 0.45)
        lut[VESSEL] = u(0.85, 1.0)
        lut[EPI_FAT] = fat * u(0.9, 1.0)
        lut[HEART_WALL] = myo * u(0.9, 1.1)
        lut[RV_CAV] = u(0.85, 1.0)
        lut[LV_MYO] = myo
        lut[LV_CAV] = 1.0
        lut[LV_PAP] = myo * u(0.95, 1.15)
        lut[ATRIUM] = u(0.85, 1.0)
        lut[AORTA] = u(0.9, 1.05)
        self.lut = lut * np.float32(u(150.0, 600.0))
        self.bias_grad = rng.normal(0.0, 0.15, size=3) + np.array([0.0, -0.35, 0.0])
        self.bias_wave = rng.normal(0.0, 1.0, size=3) * 2 * np.pi / u(250.0, 400.0)
        self.bias_phase = u(0.0, 2 * np.pi)
        self.bias_amp = u(0.05, 0.15)
        self.noise = float(self.lut[LV_CAV]) * u(0.015, 0.05)

    # shapes -------------------------------------------------------------------------------------
    def _epi(self, endo, wall) -> tuple[float, float, float]:
        return (endo[0] + wall, endo[1] + wall, endo[2] + self.apex_wall_ratio * wall)

    def _shell_volume(self, endo, wall) -> float:
        e = self._epi(endo, wall)
        return 2.0 / 3.0 * np.pi * (e[0] * e[1] * e[2] - endo[0] * endo[1] * endo[2])

    def shape(self, c: float) -> _Shape:
        """Shape at contraction ``c`` (0 = ED, 1 = ES); myocardial volume conserved."""
        shift = self.descent * c
        k = 1.0 - self.radial * c
        endo = (self.endo_ed[0] * k, self.endo_ed[1] * k, self.endo_ed[2] - shift)
        lo, hi = 0.0, 60.0
        for _ in range(60):  # bisection: the shell volume grows monotonically with the wall
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self._shell_volume(endo, mid) < self.myo_volume else (lo, mid)
        wall = 0.5 * (lo + hi)
        kr = 1.0 - self.rv_radial * c
        rv = (self.rv_ed[0] * kr, self.rv_ed[1] * kr, self.rv_ed[2] - shift)
        return _Shape(shift, endo, self._epi(endo, wall), rv, self.pap_r * (1.0 + 0.3 * c))

    def wall_thickness(self, c: float) -> float:
        sh = self.shape(c)
        return sh.epi[0] - sh.endo[0]

    @property
    def apex(self) -> np.ndarray:
        """Epicardial apex at ED (the endocardial apex stays put over the cycle; the base moves)."""
        return self.base + self._epi(self.endo_ed, self.wall_ed)[2] * self.w

    def base_at(self, c: float) -> np.ndarray:
        return self.base + self.descent * c * self.w

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Local (s, a, w) coordinates relative to the ED base centre."""
        d = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.base
        # explicit sums, not ``d @ R.T``: a multi-threaded BLAS call per slice thrashes a busy machine
        return d[:, 0:1] * self.R[:, 0] + d[:, 1:2] * self.R[:, 1] + d[:, 2:3] * self.R[:, 2]

    # classes ------------------------------------------------------------------------------------
    def heart_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Local (s, a, w) bounding box of every heart structure over the whole cycle."""
        e = self._epi(self.endo_ed, self.wall_ed)
        m = self.rv_wall + self.fat + 3.0
        r_atr = 1.1 * max(self.la_r, self.ra_r) + 3.0
        ao_end = self.ao_p0 + self.ao_len * self.ao_dir
        lo = np.array(
            [
                min(-e[0], self.la_c[0] - r_atr, ao_end[0] - self.ao_r) - m,
                min(-e[1], -self.rv_ed[1], self.la_c[1] - r_atr, self.ra_c[1] - r_atr, ao_end[1] - self.ao_r) - m,
                min(self.la_c[2] - r_atr, self.ra_c[2] - r_atr, ao_end[2] - self.ao_r) - m,
            ]
        )
        hi = np.array(
            [
                max(e[0], self.rv_offset + self.rv_ed[0], self.ra_c[0] + r_atr, ao_end[0] + self.ao_r) + m,
                max(e[1], self.rv_ed[1], self.la_c[1] + r_atr, self.ra_c[1] + r_atr, ao_end[1] + self.ao_r) + m,
                e[2] + m,
            ]
        )
        return lo, hi

    def heart_classes(self, q_ed: np.ndarray, c: float) -> np.ndarray:
        """Tissue class of heart structures at local ED points (N, 3); NOT_HEART elsewhere."""
        sh = self.shape(c)
        q = np.array(q_ed, dtype=np.float32, copy=True)
        q[:, 2] -= np.float32(sh.shift)
        out = np.full(len(q), NOT_HEART, dtype=np.uint8)
        f, tw = self.fat, self.rv_wall
        zero = (0.0, 0.0, 0.0)
        rv_c = (self.rv_offset, 0.0, 0.0)

        # ventricles (below the base plane, w >= 0)
        vi = np.flatnonzero(q[:, 2] >= 0.0)
        qv = q[vi]
        ov = np.full(len(vi), NOT_HEART, dtype=np.uint8)
        fat = _ellipsoid(qv, zero, [x + f for x in sh.epi]) | _ellipsoid(qv, rv_c, [x + tw + f for x in sh.rv])
        ov[fat] = EPI_FAT
        ov[_ellipsoid(qv, rv_c, [x + tw for x in sh.rv])] = HEART_WALL
        ov[_ellipsoid(qv, rv_c, sh.rv)] = RV_CAV
        ov[_ellipsoid(qv, zero, sh.epi)] = LV_MYO  # on top of the RV: the septum is LV myocardium
        ci = np.flatnonzero(_ellipsoid(qv, zero, sh.endo))
        ov[ci] = LV_CAV
        # papillary muscles attached to the wall, from 30% to 65% of the cavity length
        qc = qv[ci]
        qw = qc[:, 2]
        level = np.sqrt(np.clip(1.0 - (qw / sh.endo[2]) ** 2, 0.0, None))
        span = (qw > 0.30 * sh.endo[2]) & (qw < 0.65 * sh.endo[2])
        for ang in self.pap_angles:
            rad = level * (sh.endo[0] * abs(np.cos(ang)) + sh.endo[1] * abs(np.sin(ang))) - 0.7 * sh.pap_r
            ds = qc[:, 0] - rad * np.cos(ang)
            da = qc[:, 1] - rad * np.sin(ang)
            ov[ci[span & (ds * ds + da * da <= sh.pap_r**2)]] = LV_PAP
        out[vi] = ov

        # atria and aortic root (above the base plane)
        ai = np.flatnonzero(q[:, 2] < 0.0)
        qa = q[ai]
        oa = np.full(len(ai), NOT_HEART, dtype=np.uint8)
        for centre, r in ((self.la_c, self.la_r), (self.ra_c, self.ra_r)):
            oa[_ellipsoid(qa, centre, (r + 2, r + 2, 1.1 * r + 2))] = HEART_WALL
        for centre, r in ((self.la_c, self.la_r), (self.ra_c, self.ra_r)):
            oa[_ellipsoid(qa, centre, (r, r, 1.1 * r))] = ATRIUM
        rel = qa - self.ao_p0.astype(np.float32)
        ao = self.ao_dir.astype(np.float32)
        t = rel[:, 0] * ao[0] + rel[:, 1] * ao[1] + rel[:, 2] * ao[2]
        dist2 = np.einsum("ij,ij->i", rel, rel) - t * t
        along = (t >= 0) & (t <= self.ao_len)
        oa[along & (dist2 <= (self.ao_r + 2) ** 2)] = HEART_WALL
        oa[along & (dist2 <= self.ao_r**2)] = AORTA
        out[ai] = oa
        return out

    def static_classes(self, points: np.ndarray) -> np.ndarray:
        """Tissue class of the torso (no heart) at world points (N, 3)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        dx = p[:, 0] - self.body_c[0]
        dy = p[:, 1] - self.body_c[1]
        z = p[:, 2]
        bx, by = self.body_semi

        def ring(shrink: float) -> np.ndarray:
            return (dx / (bx - shrink)) ** 2 + (dy / (by - shrink)) ** 2 <= 1.0

        out = np.full(len(p), AIR, dtype=np.uint8)
        out[ring(0.0)] = SUBCUT_FAT
        out[ring(self.subcut)] = MUSCLE
        inner = ring(self.subcut + self.muscle)
        out[inner] = SOFT
        dome = self.diaphragm_z - 0.002 * dx**2
        above = z > dome
        for side in (1.0, -1.0):
            lung = (
                ((dx - side * 0.5 * bx) / (0.38 * bx)) ** 2
                + ((dy - 0.15 * by) / (0.7 * by)) ** 2
                + ((z - self.base[2] - 30.0) / 150.0) ** 2
            ) <= 1.0
            out[lung & above & inner] = LUNG
        out[inner & (z < dome - 3.0) & (dx < 40.0)] = LIVER
        spine_y = by - self.subcut - self.muscle - 30.0
        out[(dx**2 + (dy - spine_y) ** 2) <= 18.0**2] = SPINE
        out[((dx - 20.0) ** 2 + (dy - spine_y + 32.0) ** 2) <= 11.0**2] = VESSEL
        return out

    def classes_at(self, points: np.ndarray, c: float) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        out = self.static_classes(p)
        h = self.heart_classes(self.to_local(p), c)
        m = h != NOT_HEART
        out[m] = h[m]
        return out

    def labels_at(self, points: np.ndarray, c: float) -> np.ndarray:
        """Segmentation labels (0 bg, 1 LV cavity, 2 LV myocardium, 3 RV cavity) at world points."""
        h = self.heart_classes(self.to_local(points), c)
        return CLASS_TO_LABEL[h]

    def bias(self, points: np.ndarray) -> np.ndarray:
        """Smooth receive-coil shading: brighter anteriorly, a slow wave on top."""
        d = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.base) / 200.0
        wave = self.bias_amp * np.sin(np.einsum("ij,j->i", d, self.bias_wave) * 200.0 + self.bias_phase)
        return np.exp(np.clip(np.einsum("ij,j->i", d, self.bias_grad) + wave, -1.0, 1.0)).astype(np.float32)

    # truth --------------------------------------------------------------------------------------
    def volumes(self, c: float, *, step_mm: float = 1.0) -> dict[str, float]:
        """LV volumes analytically (half ellipsoids); RV by midpoint integration on a fine grid (ml)."""
        sh = self.shape(c)
        lv_cav = 2.0 / 3.0 * np.pi * np.prod(sh.endo) / 1000.0
        lv_myo = 2.0 / 3.0 * np.pi * (np.prod(sh.epi) - np.prod(sh.endo)) / 1000.0
        rv = sh.rv
        gs = np.arange(self.rv_offset - rv[0], self.rv_offset + rv[0], step_mm) + step_mm / 2
        ga = np.arange(-rv[1], rv[1], step_mm) + step_mm / 2
        count = 0
        for wv in np.arange(0.0, rv[2], step_mm) + step_mm / 2:
            S, A = np.meshgrid(gs, ga, indexing="ij")
            q = np.stack([S.ravel(), A.ravel(), np.full(S.size, wv)], axis=1)
            inside = _ellipsoid(q, (self.rv_offset, 0.0, 0.0), rv) & ~_ellipsoid(q, (0.0, 0.0, 0.0), sh.epi)
            count += int(inside.sum())
        return {
            "lv_cavity": float(lv_cav),
            "lv_myocardium": float(lv_myo),
            "rv_cavity": float(count * step_mm**3 / 1000.0),
        }


# ------------------------------------------------------------------------------------------------
# exam geometry and rendering


def _plane_centred(centre: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, spacing, shape) -> Plane:
    rows, cols = shape
    origin = centre - (cols - 1) / 2.0 * spacing[1] * row_dir - (rows - 1) / 2.0 * spacing[0] * col_dir
    return Plane(origin, row_dir, col_dir, spacing)


def _in_plane_rotate(row0: np.ndarray, col0: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    ca, sa = np.cos(angle), np.sin(angle)
    return ca * row0 + sa * col0, -sa * row0 + ca * col0


def _grid(rng: np.random.Generator) -> tuple[tuple[int, int], tuple[float, float]]:
    """Matrix size and pixel spacing (row, col) of one series; pixels sometimes non-square."""
    shape = (int(rng.choice([160, 176, 192, 208, 224])), int(rng.choice([160, 176, 192, 208, 224])))
    sp = rng.uniform(1.3, 1.9)
    sc = float(np.clip(sp * (rng.uniform(0.9, 1.1) if rng.random() < 0.3 else 1.0), 1.2, 1.9))
    return shape, (float(sp), sc)


def _render(
    heart: SyntheticHeart,
    plane: Plane,
    shape: tuple[int, int],
    thickness: float,
    n_sub: int,
    cs: list[float],
    label_frames: set[int],
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Images of one slice at every frame (slab-averaged, shaded, Rician noise); labels at some frames."""
    rows, cols = shape
    n_pix = rows * cols
    rr, cc = np.mgrid[0:rows, 0:cols]
    centre_pts = plane.pixel_to_world(rr, cc).reshape(-1, 3)
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * thickness
    pts = (centre_pts[None, :, :] + offsets[:, None, None] * plane.normal).reshape(-1, 3)
    # the torso does not move: its slab average is computed once; only pixels whose slab meets the
    # heart's bounding box are re-evaluated at every frame
    static = heart.static_classes(pts).reshape(n_sub, n_pix)
    static_mean = heart.lut[static].mean(axis=0)
    lo, hi = heart.heart_box()
    q_c = heart.to_local(centre_pts).astype(np.float32)
    n_loc = (heart.R @ plane.normal).astype(np.float32)
    reach = np.abs(n_loc) * (thickness / 2.0)  # a pixel's slab spans +-reach in local coordinates
    pix = np.flatnonzero(np.all((q_c >= lo - reach) & (q_c <= hi + reach), axis=1))
    q_box = (q_c[None, pix, :] + offsets.astype(np.float32)[:, None, None] * n_loc).reshape(-1, 3)
    static_box = static[:, pix]
    bias = heart.bias(centre_pts)
    mid = n_sub // 2  # odd n_sub: the centre sub-plane is the slab centre
    images, labels = [], {}
    for frame, c in enumerate(cs):
        h = heart.heart_classes(q_box, c).reshape(n_sub, len(pix))
        cls = np.where(h != NOT_HEART, h, static_box)
        clean = static_mean.copy()
        clean[pix] = heart.lut[cls].mean(axis=0)
        clean = (clean * bias).reshape(rows, cols)
        n1 = rng.standard_normal((rows, cols), dtype=np.float32)
        n2 = rng.standard_normal((rows, cols), dtype=np.float32)
        # magnitude images are whole numbers on a scanner (stored as DICOM/NIfTI integers)
        img = np.rint(np.hypot(clean + heart.noise * n1, heart.noise * n2)).astype(np.float32)
        images.append(img)
        if frame in label_frames:
            lab = np.zeros(n_pix, dtype=np.uint8)
            lab[pix] = CLASS_TO_LABEL[cls[mid]]
            labels[frame] = lab.reshape(rows, cols)
    return images, labels


def subject_index(subject_id: str) -> int:
    """The index that seeds a subject: the id's trailing number (``synth00042`` -> 42), else its CRC32."""
    m = _TRAILING_INT.search(subject_id)
    return int(m.group(1)) if m else zlib.crc32(subject_id.encode())


def subject_id_for(index: int, n_subjects: int | None = None) -> str:
    """``synth00042``: zero-padded to at least 5 digits (more when the cohort needs them)."""
    width = max(5, len(str(max((n_subjects or 1) - 1, 0))))
    return f"synth{index:0{width}d}"


def synth_heart(seed: int, index: int) -> SyntheticHeart:
    """The anatomy of subject ``index`` of cohort ``seed`` (same draws as ``synth_subject``)."""
    return SyntheticHeart(np.random.default_rng([int(seed), int(index)]))


def synth_subject(
    subject_id: str,
    seed: int,
    *,
    n_frames: int = DEFAULT_N_FRAMES,
    index: int | None = None,
    n_sub: int = 5,
) -> SubjectRecord:
    """One synthetic subject: SA stack + 2ch/3ch/4ch LA cine slices, labels at ED and ES.

    The subject's generator is ``np.random.default_rng([seed, index])``; ``index`` defaults to the
    id's trailing number (see ``subject_index``), so ``synth_subject("synth00042", 7)`` is subject 42
    of the cohort ``cardiossl synth --seed 7`` writes. ``n_sub`` sub-planes are averaged across each
    slab (odd, so that the labels sit on the slab centre plane).

    ``meta`` (JSON): source, seed, index, n_frames, ed_frame (0), es_frame, lv_axis (base = LV base
    centre at ED, apex = epicardial apex, base_es; LPS mm), volumes_ml {ed, es: lv_cavity,
    lv_myocardium, rv_cavity} (LV analytic, RV integrated on a 1 mm grid), lv_ejection_fraction,
    wall_thickness_mm {ed, es}, sa_slice_gap_mm, sa_slice_thickness_mm, la_slice_thickness_mm.
    """
    if n_sub < 1 or n_sub % 2 == 0:
        raise ValueError(f"n_sub must be a positive odd number, got {n_sub}")
    es_frame = es_frame_for(n_frames)
    idx = subject_index(subject_id) if index is None else int(index)
    rng = np.random.default_rng([int(seed), idx])
    heart = SyntheticHeart(rng)
    cs = [contraction(t, n_frames, es_frame) for t in range(n_frames)]
    phases = {0: "ed", es_frame: "es"}
    label_frames = set(phases)
    s, a, w = heart.s, heart.a, heart.w
    slices: list[SliceRecord] = []

    # --- short-axis stack: planes perpendicular to the LV axis, slice 0 at the base
    gap = rng.uniform(8.0, 10.0)
    thick = rng.uniform(6.0, 8.0)
    epi_len = heart._epi(heart.endo_ed, heart.wall_ed)[2]
    w0 = rng.uniform(0.0, 6.0)
    n_sa = int(np.clip(np.ceil((epi_len + 5.0 - w0) / gap) + 1, 8, 12))
    shape, spacing = _grid(rng)
    row_dir, col_dir = _in_plane_rotate(-s, -a, np.deg2rad(rng.uniform(-20.0, 20.0)))
    offset = 15.0 * s + rng.uniform(-15.0, 15.0, size=2) @ np.stack([s, a])
    for k in range(n_sa):
        centre = heart.base + (w0 + k * gap) * w + offset
        plane = _plane_centred(centre, row_dir, col_dir, spacing, shape)
        images, labels = _render(heart, plane, shape, thick, n_sub, cs, label_frames, rng)
        for t, img in enumerate(images):
            slices.append(
                SliceRecord("sa", k, t, img, plane, labels.get(t), phases.get(t, ""), k / (n_sa - 1))
            )

    # --- long-axis slices: planes containing the LV axis at their standard angles
    la_thick = rng.uniform(6.0, 8.0)
    la_shape, la_spacing = _grid(rng)
    for view in LA_VIEWS:
        if view == "3ch":
            theta = heart.lvot_angle  # through the LV outflow tract and aortic root
        else:
            theta = np.deg2rad(LA_ANGLES_DEG[view] + rng.uniform(-6.0, 6.0))
        d = np.cos(theta) * s + np.sin(theta) * a
        row_dir, col_dir = _in_plane_rotate(-d, -w, np.deg2rad(rng.uniform(-15.0, 15.0)))
        centre = heart.base + (0.3 * epi_len + rng.uniform(-10.0, 10.0)) * w + rng.uniform(-10.0, 10.0) * d
        plane = _plane_centred(centre, row_dir, col_dir, la_spacing, la_shape)
        images, labels = _render(heart, plane, la_shape, la_thick, n_sub, cs, label_frames, rng)
        for t, img in enumerate(images):
            slices.append(SliceRecord(view, 0, t, img, plane, labels.get(t), phases.get(t, "")))

    vol_ed, vol_es = heart.volumes(0.0), heart.volumes(1.0)
    meta = {
        "source": "synthetic",
        "seed": int(seed),
        "index": idx,
        "n_frames": int(n_frames),
        "ed_frame": 0,
        "es_frame": int(es_frame),
        "lv_axis": {
            "base": [float(x) for x in heart.base],
            "apex": [float(x) for x in heart.apex],
            "base_es": [float(x) for x in heart.base_at(1.0)],
        },
        "volumes_ml": {"ed": vol_ed, "es": vol_es},
        "lv_ejection_fraction": float(1.0 - vol_es["lv_cavity"] / vol_ed["lv_cavity"]),
        "wall_thickness_mm": {"ed": float(heart.wall_thickness(0.0)), "es": float(heart.wall_thickness(1.0))},
        "sa_slice_gap_mm": float(gap),
        "sa_slice_thickness_mm": float(thick),
        "la_slice_thickness_mm": float(la_thick),
    }
    return SubjectRecord(subject_id, slices, meta).validate()


def intersection_dice(
    sa_slices: list[SliceRecord], la_slice: SliceRecord, labels=(1, 2, 3), step_px: float = 0.25
) -> dict[int, float]:
    """Dice of each label along the lines where an LA slice cuts the SA slices (nearest pixel in both).

    Points are sampled along the trace of the LA plane in every SA slice (``trace_in_slice``), mapped
    into the LA slice, and the two labels compared. A label absent from both gives NaN. This is the
    check that the stored planes are the planes the labels were drawn on.
    """
    from ..geometry import line_segment_in_image, trace_in_slice

    sa_lab, la_lab = [], []
    la = la_slice
    for sa in sa_slices:
        tr = trace_in_slice(sa.plane, la.plane)
        if tr is None:
            continue
        seg = line_segment_in_image(tr[0], tr[1], sa.label.shape)
        if seg is None:
            continue
        p0, p1 = seg
        n = max(2, int(np.linalg.norm(p1 - p0) / step_px))
        t = np.linspace(0.0, 1.0, n)[:, None]
        rc = p0 + t * (p1 - p0)
        r = np.clip(np.rint(rc[:, 0]).astype(int), 0, sa.label.shape[0] - 1)
        c = np.clip(np.rint(rc[:, 1]).astype(int), 0, sa.label.shape[1] - 1)
        world = sa.plane.pixel_to_world(rc[:, 0], rc[:, 1])
        lr, lc, _ = la.plane.world_to_pixel(world)
        lr, lc = np.rint(lr).astype(int), np.rint(lc).astype(int)
        ok = (lr >= 0) & (lr < la.label.shape[0]) & (lc >= 0) & (lc < la.label.shape[1])
        sa_lab.append(sa.label[r[ok], c[ok]])
        la_lab.append(la.label[lr[ok], lc[ok]])
    a = np.concatenate(sa_lab) if sa_lab else np.zeros(0, np.uint8)
    b = np.concatenate(la_lab) if la_lab else np.zeros(0, np.uint8)
    out = {}
    for k in labels:
        x, y = a == k, b == k
        denom = int(x.sum() + y.sum())
        out[int(k)] = float(2.0 * (x & y).sum() / denom) if denom else float("nan")
    return out
