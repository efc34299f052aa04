"""The version-2 heart: implicit shapes in a local frame, built to a drawn phenotype.

Local frame (as in version 1): ``s`` towards the RV, ``a`` anterior, ``w`` from the LV base (the
mitral annulus plane) to the apex; ``theta`` is the angle about ``w`` from ``s`` towards ``a``.

* LV: a truncated ellipsoidal cavity (semi-axes A, B, C; C from the base to the endocardial apex)
  sized to the drawn EDV and sphericity, with a wall whose thickness varies with angle and depth
  (apical thinning; asymmetric septal or concentric hypertrophy; a thinned infarct sector), the
  regional form of the prolate LV models of Streeter & Hanna (1973) and of cardiac atlases (Fonseca
  et al., Bioinformatics 2011). Systole: the base descends by the MAPSE towards a fixed apex and the
  endocardium moves inwards by a factor solved for the drawn EF, except in an akinetic sector; each
  wall element keeps its volume, so the wall thickens where it moves.
* Trabeculae (a band of myocardium-like strands along the endocardium) and two papillary muscles
  fill part of the cavity and are labelled cavity, as the ACDC and UK Biobank protocols do.
* RV: an ellipsoid beside the LV (offset, rotated and sized to the drawn RV EDV and EF) minus the LV,
  so it wraps the septum as a crescent; a free wall, trabeculae near it, and an outflow tract rising
  anterior to the aorta to the pulmonary valve (labelled RV cavity below the valve).
* Above the base: left and right atria, aortic root and ascending aorta, pulmonary trunk; the
  valves between them and the ventricles as thin dark lines (closed leaflets, as at ED and ES), so
  the ventricles' labels stop where an image shows a boundary.
* Epicardial/pericardial fat, thickest in the atrioventricular grooves, patchy elsewhere.

Volumes: LV by quadrature of the same radius functions the labels use; RV on a 2.5 mm grid of the labels.
"""

from __future__ import annotations

import numpy as np

from .tissues import (
    AORTA,
    ATRIUM,
    HEART_WALL,
    LV_CAV,
    LV_MYO,
    LV_PAP,
    LV_TRAB,
    NOT_HEART,
    PERICARDIAL_FAT,
    RV_CAV,
    RV_TRAB,
    VESSEL,
)
from .v1 import LA_ANGLES_DEG, _rotate, _unit


VALVE_MM = 1.5
"""Thickness of the dark line of closed valve leaflets where each ventricle meets its atrium or
artery: the cue readers use to stop a ventricle's label at the valve plane."""
_FAT_GAIN_MAX = 1.6
"""Irregular fat (``Heart(fat_rng=...)``) is at most this many times the regular thickness."""


def _vm(cos_d, kappa: float):
    """von Mises bump of the angular distance (given its cosine): 1 at the centre."""
    return np.exp(kappa * (cos_d - 1.0))


def _smooth01(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _in_ellipsoid(q, centre, semi):
    acc = np.square((q[:, 0] - centre[0]) / semi[0])
    acc += np.square((q[:, 1] - centre[1]) / semi[1])
    acc += np.square((q[:, 2] - centre[2]) / semi[2])
    return acc <= 1.0


def _box_idx(q, lo, hi) -> np.ndarray:
    """Indices of the points q (N, 3) inside the axis-aligned box [lo, hi] (column by column: fast)."""
    m = q[:, 0] > lo[0]
    for k in range(3):
        if k:
            m &= q[:, k] > lo[k]
        m &= q[:, k] < hi[k]
    return np.flatnonzero(m)


def _tube(q, p0, direction):
    """(t along the tube axis, squared distance from it) for points q."""
    rel = q - p0
    t = rel @ direction
    return t, np.einsum("ij,ij->i", rel, rel) - t * t


class Heart:
    """One subject's heart; ``rng`` draws the shape variation, ``phenotype`` fixes volumes and EF."""

    def __init__(self, rng: np.random.Generator, phenotype: dict, *, fat_mm: tuple[float, float] = (1.0, 5.0),
                 fat_rng: np.random.Generator | None = None, trab_mm: tuple[float, float] = (1.5, 3.0),
                 trab_level: tuple[float, float] = (0.2, 0.7), pap_mm: tuple[float, float] = (3.0, 5.5),
                 rv_trab_mm: tuple[float, float] = (1.5, 3.0), rv_trab_cut: float = 0.55) -> None:
        """``fat_mm``: the range of the epicardial fat scale; ``fat_rng`` (a stream of its own) makes
        the fat irregular (``_fat_gain``); without it the fat is what version 2 draws. ``trab_mm``,
        ``trab_level`` and ``pap_mm``: the ranges of the trabecular band's depth and density and of the
        papillary muscles' radius (labelled LV cavity whatever they are); ``rv_trab_mm`` and
        ``rv_trab_cut``: the RV trabecular band's depth range and its strands' threshold (lower: denser)."""
        u = rng.uniform
        self.phenotype = phenotype
        # --- orientation in the chest (LPS) and position, as in version 1
        w = _unit([0.62, -0.55, -0.56])
        w = _unit(_rotate(w, _unit(np.cross(w, rng.normal(size=3))), np.deg2rad(u(0.0, 15.0))))
        ra = _unit([-1.0, -1.0, 0.0])
        s = _unit(_rotate(_unit(ra - (ra @ w) * w), w, np.deg2rad(u(-10.0, 10.0))))
        a = np.cross(w, s)
        if a[1] > 0:
            a = -a
        self.s, self.a, self.w = s, a, w
        self.R = np.stack([s, a, w])
        self.base = np.array([u(0.0, 40.0), u(-30.0, 10.0), u(-40.0, 40.0)])

        # --- LV cavity at ED from EDV and sphericity: EDV = (pi / 6) SI^2 C^3
        edv = phenotype["lv_edv_ml"] * 1000.0
        si = phenotype["sphericity"]
        self.C = float((6.0 * edv / (np.pi * si * si)) ** (1.0 / 3.0))
        rm, ecc = si * self.C / 2.0, u(0.9, 1.1)
        self.A, self.B = rm * np.sqrt(ecc), rm / np.sqrt(ecc)
        self.wall = phenotype["wall_mm"]
        self.wall_wave = (u(0.0, 0.1), u(0.0, 2 * np.pi))  # mild regional variation in normal walls
        self.hyp = phenotype.get("hypertrophy")
        self.inf = phenotype.get("infarct")
        self.apex_wall = self.wall * u(0.6, 0.8)
        if self.inf and self.inf["depth_to"] >= 1.0:
            self.apex_wall = min(self.apex_wall, self.inf["wall_mm"] * 0.8)
        # --- systole: MAPSE, then the radial factor that gives the drawn EF
        ef = phenotype["lv_ef"]
        self.shift = float(min(phenotype["mapse_mm"], self.C * (1.0 - (1.0 - ef) / 0.97)))
        self.k0 = self._solve_k0(ef)
        # --- trabeculae and papillary muscles
        self.trab_depth = u(*trab_mm) * (1.6 if phenotype["group"] == "DCM" else 1.0)
        self.trab = [(int(rng.integers(9, 17)), u(0, 2 * np.pi), u(-0.15, 0.15)) for _ in range(3)]
        self.trab_level = u(*trab_level)
        self.pap_r = u(*pap_mm) * (1.3 if phenotype["group"] == "HCM" else 1.0)
        self.pap_angles = np.deg2rad([135.0 + u(-20, 20), 235.0 + u(-20, 20)])
        self.pap_span = (u(0.25, 0.35), u(0.6, 0.75))

        # --- RV: offset, rotated ellipsoid; sized to the RV EDV, its ES to the RV EF
        epi_s = self.A + self.wall
        self.rv_c = np.array([epi_s * u(0.7, 0.9), u(-5.0, 8.0), 0.0])
        self.rv_rot = np.deg2rad(u(-15.0, 15.0))
        self.rv_semi = np.array([u(22.0, 30.0), (self.B + self.wall) * u(1.2, 1.45),
                                 (self.C + self.apex_wall) * u(0.72, 0.88)])
        self.rv_base = u(0.0, 8.0)  # tricuspid annulus below the mitral plane
        self.rv_wall = u(3.0, 4.5) * (1.4 if phenotype["group"] == "HCM" else 1.0)
        self.rv_trab = (int(rng.integers(5, 10)), u(0, 2 * np.pi), u(*rv_trab_mm))
        self.rv_trab_cut = rv_trab_cut
        self.rv_shift = self.shift * u(1.2, 1.6)  # TAPSE exceeds MAPSE
        self.rv_k = 1.0
        # --- outflow tracts, vessels and atria above the base
        self.rvot_r = u(10.0, 13.0)
        self.rvot_p0 = np.array([self.rv_c[0] * 0.4, self.rv_c[1] + self.rv_semi[1] * 0.5, 12.0])
        self.rvot_dir = _unit(np.array([u(-0.45, -0.25), u(0.35, 0.6), -1.0]))
        self.rvot_len = float((self.rvot_p0[2] + u(15.0, 25.0)) / -self.rvot_dir[2])
        self.pa_len = 35.0
        th3 = np.deg2rad(LA_ANGLES_DEG["3ch"] + u(-8.0, 8.0))
        self.lvot_angle = th3
        d3 = np.array([np.cos(th3), np.sin(th3), 0.0])
        self.ao_r = u(11.0, 15.0)
        self.ao_p0 = 0.45 * self.A * d3 + np.array([0.0, 0.0, 2.0])
        self.ao_dir = _unit(np.array([0.0, 0.0, -1.0]) + 0.5 * d3)
        self.ao_len = 60.0
        big = phenotype["group"] in ("DCM", "MINF", "HCM")
        self.la_r = u(24.0, 31.0) if big else u(20.0, 26.0)
        self.ra_r = u(22.0, 28.0) * (1.15 if phenotype["group"] == "RV" else 1.0)
        self.la_c = np.array([u(-8.0, 0.0), u(-14.0, -4.0), -0.75 * self.la_r])  # over the mitral annulus
        self.ra_c = np.array([self.rv_c[0] + u(0.0, 10.0), u(-15.0, -5.0), -0.8 * self.ra_r])
        # --- fat
        self.fat = u(*fat_mm)
        self.fat_patch = (u(0, 2 * np.pi), u(0, 2 * np.pi))
        self.fat_irregular = None
        if fat_rng is not None:  # harmonics 3-6 about the axis and a wave along it, each with a random phase
            f = fat_rng.uniform
            self.fat_irregular = {
                "harmonics": [(k, f(0.1, 0.45), f(0, 2 * np.pi)) for k in (3, 4, 5, 6)],
                "along": (f(0.2, 0.5), f(25.0, 60.0), f(0, 2 * np.pi)),
            }
        self.fat_reach = self.fat * (_FAT_GAIN_MAX if self.fat_irregular else 1.0)

        self._fit_rv(phenotype["rv_edv_ml"], phenotype["rv_ef"])

    def _fat_gain(self, th, z):
        """Multiplier of the fat thickness at angle ``th`` about an axis and depth ``z`` (mm): 1
        without ``fat_irregular``; else 0 (no fat) to ``_FAT_GAIN_MAX``, patchy as real epicardial fat."""
        if self.fat_irregular is None:
            return 1.0
        g = 1.0
        for k, amp, ph in self.fat_irregular["harmonics"]:
            g = g + amp * np.sin(k * th + ph)
        amp, wavelength, ph = self.fat_irregular["along"]
        g = g + amp * np.sin(2 * np.pi * z / wavelength + ph)
        return np.clip(g, 0.0, _FAT_GAIN_MAX).astype(np.float32)

    # --- the LV radius functions --------------------------------------------------------------
    def _r0(self, ct, st):
        """ED endocardial radius at the equator in direction (cos, sin) theta."""
        return self.A * self.B / np.sqrt((self.B * ct) ** 2 + (self.A * st) ** 2)

    def _infarct(self, ct, st, zeta):
        if not self.inf:
            return np.zeros(np.broadcast(ct, zeta).shape)
        c = np.deg2rad(self.inf["centre_deg"])
        ang = _smooth01((_vm(ct * np.cos(c) + st * np.sin(c), self.inf["kappa"]) - 0.25) / 0.5)
        lo, hi = self.inf["depth_from"], self.inf["depth_to"]
        depth = _smooth01((zeta - lo + 0.08) / 0.16) * (1.0 if hi >= 1.0 else _smooth01((hi + 0.08 - zeta) / 0.16))
        return ang * depth

    def _thick(self, ct, st, zeta):
        """ED wall thickness (mm) at angle and normalised depth."""
        amp, ph = self.wall_wave
        t = self.wall * (1.0 + amp * (ct * np.cos(ph) + st * np.sin(ph)))
        if self.hyp:
            c = np.deg2rad(self.hyp["centre_deg"])
            bump = _vm(ct * np.cos(c) + st * np.sin(c), self.hyp["kappa"])
            if self.hyp["pattern"] == "concentric":
                bump = 0.7 + 0.3 * bump
            t = t + (self.hyp["max_wall_mm"] - t) * bump * (1.0 - 0.4 * _smooth01((zeta - 0.5) / 0.5))
        if self.inf:
            m = self._infarct(ct, st, zeta)
            t = t * (1.0 - m) + self.inf["wall_mm"] * m
        return t * (1.0 - 0.3 * _smooth01((zeta - 0.55) / 0.45))  # the apical half thins

    def _k(self, ct, st, zeta, c: float, k0: float | None = None):
        """Endocardial radial factor at contraction c (1 at ED); the infarct sector barely moves."""
        k0 = self.k0 if k0 is None else k0
        m = self._infarct(ct, st, zeta) * (self.inf["akinesia"] if self.inf else 0.0)
        return 1.0 - c * (1.0 - k0) * (1.0 - m)

    def _length(self, c: float) -> float:
        return self.C - self.shift * c

    def _quad(self, n_t: int = 96, n_z: int = 48):
        th = (np.arange(n_t) + 0.5) * 2 * np.pi / n_t
        z = (np.arange(n_z) + 0.5) / n_z
        T, Z = np.meshgrid(th, z, indexing="ij")
        return np.cos(T), np.sin(T), Z, (2 * np.pi / n_t) * (1.0 / n_z)

    def _solve_k0(self, ef: float) -> float:
        ct, st, z, dA = self._quad(64, 32)
        base = 0.5 * np.square(self._r0(ct, st)) * (1.0 - z * z)
        edv = self.C * float(np.sum(base)) * dA
        ratio = self._length(1.0) / self.C
        lo, hi = 0.05, 1.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            esv = self.C * ratio * float(np.sum(base * np.square(self._k(ct, st, z, 1.0, mid)))) * dA
            lo, hi = (mid, hi) if esv < (1.0 - ef) * edv else (lo, mid)
        return 0.5 * (lo + hi)

    def lv_radii(self, ct, st, zeta, c: float):
        """(endocardial, epicardial) radius at angle and normalised depth zeta = w' / C(c) in [0, 1]."""
        sq = np.sqrt(np.clip(1.0 - zeta * zeta, 0.0, None))
        r_ed = self._r0(ct, st) * sq
        endo = r_ed * self._k(ct, st, zeta, c)
        epi_ed = r_ed + self._thick(ct, st, zeta)
        epi = np.sqrt(endo * endo + (epi_ed * epi_ed - r_ed * r_ed) * (self.C / self._length(c)))
        return endo, epi

    # --- RV sizing ----------------------------------------------------------------------------
    def _rv_grid(self, step: float) -> np.ndarray:
        lo, hi = self.rv_box()
        axes = [np.arange(lo[i], hi[i], step) + step / 2 for i in range(3)]
        g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        return g.astype(np.float32)

    def rv_volume(self, c: float, step: float = 3.5, grid=None) -> float:
        g = self._rv_grid(step) if grid is None else grid
        cls = self.classes(g, c)
        return float(np.isin(cls, (RV_CAV, RV_TRAB)).sum() * step**3 / 1000.0)

    def _fit_rv(self, edv_ml: float, ef: float) -> None:
        """Scale the RV cross-section to the drawn EDV, then its systolic shrinkage to the drawn EF."""
        semi0 = self.rv_semi.copy()
        for _ in range(2):  # the crescent's volume grows a little faster than the scale squared
            v = self.rv_volume(0.0)
            self.rv_semi[:2] *= float(np.clip(np.sqrt(edv_ml / max(v, 1.0)), 0.7, 1.5))
        self.rv_semi[:2] = np.clip(self.rv_semi[:2], semi0[:2] * 0.6, semi0[:2] * 2.2)
        v_ed = self.rv_volume(0.0)
        grid = self._rv_grid(3.5)
        # the ES volume is close to alpha + beta k^2 in the radial factor k: two evaluations fix it,
        # a secant step on the measured volumes refines it
        target = (1.0 - ef) * v_ed
        ks, vs = [1.0, 0.5], []
        for k in ks:
            self.rv_k = k
            vs.append(self.rv_volume(1.0, grid=grid))
        beta = (vs[0] - vs[1]) / 0.75
        k = float(np.sqrt(np.clip((target - (vs[0] - beta)) / max(beta, 1e-6), 0.09, 1.0)))
        self.rv_k = k
        v = self.rv_volume(1.0, grid=grid)
        k2 = float(np.sqrt(np.clip(k * k + (target - v) / max(beta, 1e-6), 0.09, 1.0)))
        self.rv_k = k2

    # --- boxes ----------------------------------------------------------------------------------
    def rv_box(self):
        r = max(self.rv_semi[0], self.rv_semi[1]) + self.rv_wall
        p1 = self.rvot_p0 + self.rvot_len * self.rvot_dir
        lo = np.minimum([self.rv_c[0] - r, self.rv_c[1] - r, self.rv_base], p1 - self.rvot_r) - 2.0
        hi = np.maximum([self.rv_c[0] + r, self.rv_c[1] + r, self.rv_semi[2] + 2.0], self.rvot_p0 + self.rvot_r) + 2.0
        return lo, hi

    def heart_box(self):
        """Local (s, a, w) bounding box of every heart structure over the whole cycle."""
        m = self.rv_wall + 3.0 * self.fat_reach + 4.0
        e = max(self.A, self.B) + max(self.wall, (self.hyp or {}).get("max_wall_mm", 0.0)) + 4.0
        pts = [np.array([-e, -e, 0.0]), np.array([e, e, self.C + self.apex_wall + 2.0])]
        r = max(self.rv_semi[0], self.rv_semi[1]) * 1.05
        pts += [self.rv_c - [r, r, 0.0], self.rv_c + [r, r, self.rv_semi[2]]]
        for c_, rr in ((self.la_c, self.la_r * 1.15), (self.ra_c, self.ra_r * 1.15)):
            pts += [c_ - 1.1 * rr, c_ + 1.1 * rr]
        for p0, d, ln, rr in ((self.ao_p0, self.ao_dir, self.ao_len, self.ao_r + 3),
                              (self.rvot_p0, self.rvot_dir, self.rvot_len + self.pa_len, self.rvot_r * 1.1 + 3)):
            pts += [p0 - rr, p0 + ln * d - rr, p0 + rr, p0 + ln * d + rr]
        pts = np.array(pts)
        return pts.min(axis=0) - m, pts.max(axis=0) + m

    # --- classes --------------------------------------------------------------------------------
    def classes(self, q_ed: np.ndarray, c: float) -> np.ndarray:
        """Tissue class of heart structures at local ED points (N, 3); NOT_HEART elsewhere.

        Painter's order: fat, RV (wall, cavity, trabeculae, outflow tract), LV (the septum is LV
        myocardium), then the atria and the aortic root above the mitral plane. Each structure is
        evaluated only on the points inside its bounding box.
        """
        q = np.array(np.asarray(q_ed).reshape(-1, 3), dtype=np.float32, order="F")  # columns contiguous
        q[:, 2] -= np.float32(self.shift * c)  # w' = depth below the current mitral plane
        out = np.full(len(q), NOT_HEART, dtype=np.uint8)
        self._paint_rv(q, c, out)
        self._paint_lv(q, c, out)
        up = np.flatnonzero(q[:, 2] < self.rv_base + (self.rv_shift - self.shift) * c)  # above an annulus
        if up.size:
            ou = out[up]
            self._paint_atria(q[up], c, ou)
            out[up] = ou
        return out

    def _paint_lv(self, q, c, out) -> None:
        length = self._length(c)
        hmax = max(self.wall, (self.hyp or {}).get("max_wall_mm", 0.0))
        reach = max(self.A, self.B) + hmax + 4 * self.fat_reach + 4
        cand = _box_idx(q, (-reach, -reach, -1e-6), (reach, reach, length + self.apex_wall + 3 * self.fat_reach + 2))
        if not cand.size:
            return
        qs, qa, qw = q[cand, 0], q[cand, 1], q[cand, 2]
        r = np.sqrt(qs * qs + qa * qa) + np.float32(1e-6)
        ct, st = qs / r, qa / r
        zc = np.minimum(qw / length, 1.0)
        endo, epi = self.lv_radii(ct, st, zc, c)
        beyond = np.maximum(qw - length, 0.0)
        epi = np.where(beyond > 0, epi * np.sqrt(np.clip(1.0 - np.square(beyond / self.apex_wall), 0.0, None)), epi)
        # fat: thickest in the AV groove (near the base), patchy about the circumference
        p1, p2 = self.fat_patch
        th = np.arctan2(st, ct)
        patch = np.clip(np.sin(2 * th + p1) * np.cos(th + p2), 0, None)
        fat_r = epi + self.fat * (0.25 + 1.8 * np.exp(-np.square(qw / 12.0)) + patch) * self._fat_gain(th, qw)
        fat = (r < fat_r) & (beyond < self.apex_wall + self.fat) & (out[cand] == NOT_HEART)
        out[cand[fat]] = PERICARDIAL_FAT
        out[cand[r < epi]] = LV_MYO
        incav = (beyond == 0) & (r < endo)
        ci = cand[incav]
        out[ci] = LV_CAV
        # trabeculae: strands of the endocardial band; papillary muscles: two columns on the wall
        z_ci, r_ci, e_ci, th_ci, w_ci = zc[incav], r[incav], endo[incav], th[incav], qw[incav]
        noise = sum(np.sin(k * th_ci + p + f * w_ci) for k, p, f in self.trab)
        trab = (r_ci > e_ci - self.trab_depth * (1.0 + 0.5 * c)) & (noise > 1.6 - 1.2 * self.trab_level) & (z_ci > 0.08)
        out[ci[trab]] = LV_TRAB
        lo, hi = self.pap_span
        span = np.flatnonzero((z_ci > lo) & (z_ci < hi))
        pr = self.pap_r * (1.0 + 0.3 * c)
        zs, xs, ys = z_ci[span], q[ci[span], 0], q[ci[span], 1]
        for ang in self.pap_angles:
            ca_, sa_ = np.cos(ang), np.sin(ang)
            rad = self._r0(ca_, sa_) * np.sqrt(np.clip(1 - zs * zs, 0, None)) * self._k(ca_, sa_, zs, c) - 0.7 * pr
            dd = np.square(xs - rad * ca_) + np.square(ys - rad * sa_)
            out[ci[span[dd <= pr * pr]]] = LV_PAP

    def _paint_rv(self, q, c, out) -> None:
        kr = 1.0 - c * (1.0 - self.rv_k)
        rv_shift = (self.rv_shift - self.shift) * c  # the RV base descends more than the LV's
        big = max(self.rv_semi[0], self.rv_semi[1]) + self.rv_wall + 3 * self.fat_reach
        cand = _box_idx(q, (self.rv_c[0] - big, self.rv_c[1] - big, rv_shift + self.rv_base - 1e-6),
                        (self.rv_c[0] + big, self.rv_c[1] + big, self.rv_semi[2] + 2.0))
        if cand.size:
            qc = q[cand]
            cr, sr = np.cos(self.rv_rot), np.sin(self.rv_rot)
            ds, da = qc[:, 0] - self.rv_c[0], qc[:, 1] - self.rv_c[1]
            sx = self.rv_semi[0] * kr
            rs = (cr * ds + sr * da) / sx
            ra_ = (-sr * ds + cr * da) / (self.rv_semi[1] * kr)
            rw = (qc[:, 2] - rv_shift) / (self.rv_semi[2] - self.rv_shift * c)
            rho = rs * rs + ra_ * ra_ + rw * rw
            t_scale = self.rv_wall / sx
            gain = self._fat_gain(np.arctan2(ra_, rs), qc[:, 2])
            fat = (1.0 + t_scale + self.fat * (0.5 + 1.8 * np.exp(-np.square(qc[:, 2] / 12.0))) * gain / sx) ** 2
            oc = out[cand]
            oc[rho <= fat] = PERICARDIAL_FAT
            oc[rho <= (1.0 + t_scale) ** 2] = HEART_WALL
            rv = rho <= 1.0
            oc[rv] = RV_CAV
            # trabeculae: strands in the outer part of the cavity towards the free wall
            n, ph, depth = self.rv_trab
            bi = np.flatnonzero(rv & (rho > (1.0 - depth / sx) ** 2) & (rs > 0.2))
            if bi.size:
                oc[bi[np.sin(n * np.arctan2(ra_[bi], rs[bi]) + ph + 0.08 * qc[bi, 2]) > self.rv_trab_cut]] = RV_TRAB
            out[cand] = oc
        # RV outflow tract up to the pulmonary valve, pulmonary trunk above it
        ro = self.rvot_r * (1.0 - 0.15 * c)
        p0, d = self.rvot_p0.astype(np.float32), self.rvot_dir.astype(np.float32)
        p1 = p0 + (self.rvot_len + self.pa_len) * d
        rr = 1.1 * ro + self.rv_wall + 1.0
        cand = _box_idx(q, np.minimum(p0, p1) - rr, np.maximum(p0, p1) + rr)
        if cand.size:
            t, d2 = _tube(q[cand], p0, d)
            oc = out[cand]
            along = (t >= 0) & (t <= self.rvot_len)
            oc[along & (d2 <= (ro + self.rv_wall) ** 2) & (q[cand, 2] < 20.0) & (oc != RV_CAV)] = HEART_WALL
            oc[along & (d2 <= ro * ro)] = RV_CAV
            oc[along & (d2 <= ro * ro) & (t > self.rvot_len - VALVE_MM)] = HEART_WALL  # pulmonary valve
            pa = (t > self.rvot_len) & (t <= self.rvot_len + self.pa_len)
            oc[pa & (d2 <= (1.1 * ro + 2.0) ** 2)] = HEART_WALL
            oc[pa & (d2 <= (1.1 * ro) ** 2)] = VESSEL
            out[cand] = oc

    def _paint_atria(self, qu, c, ou) -> None:
        """Atria above their annuli (the LA above the mitral plane, the RA above the tricuspid), open
        to their ventricles there as valves are, and the aortic root."""
        grow = 1.0 + 0.12 * c  # the atria fill during ventricular systole
        keep = (ou == RV_CAV) | (ou == VESSEL) | (ou == LV_CAV) | (ou == LV_MYO)
        annulus = (0.0, self.rv_base + (self.rv_shift - self.shift) * c)
        for centre, rr, top in ((self.la_c, self.la_r, annulus[0]), (self.ra_c, self.ra_r, annulus[1])):
            semi = np.array([rr, rr, 1.1 * rr]) * grow
            ext = semi + 2.0 + self.fat
            ci = _box_idx(qu, centre - ext, centre + ext)
            if not ci.size:
                continue
            qc, oc = qu[ci], ou[ci]
            above = qc[:, 2] < top
            oc[above & (oc == NOT_HEART) & _in_ellipsoid(qc, centre, ext)] = PERICARDIAL_FAT
            kc = keep[ci] | ~above
            oc[_in_ellipsoid(qc, centre, semi + 2.0) & ~kc & (qc[:, 2] < top - 3.0)] = HEART_WALL
            inside = _in_ellipsoid(qc, centre, semi) & ~kc
            oc[inside] = ATRIUM
            oc[inside & (qc[:, 2] > top - VALVE_MM)] = HEART_WALL  # the closed AV valve's leaflets
            ou[ci] = oc
        p0, d = self.ao_p0.astype(np.float32), self.ao_dir.astype(np.float32)
        p1 = p0 + self.ao_len * d
        rr = self.ao_r + 2.0
        ci = _box_idx(qu, np.minimum(p0, p1) - rr, np.maximum(p0, p1) + rr)
        if ci.size:
            ta, da2 = _tube(qu[ci], p0, d)
            al = (ta >= 0) & (ta <= self.ao_len)
            oc = ou[ci]
            oc[al & (da2 <= rr * rr) & (oc != RV_CAV)] = HEART_WALL
            lumen = al & (da2 <= self.ao_r**2)
            oc[lumen] = AORTA
            oc[lumen & (qu[ci, 2] > -VALVE_MM)] = HEART_WALL  # aortic valve at the LV outflow
            ou[ci] = oc

    def labels(self, q_ed: np.ndarray, c: float) -> np.ndarray:
        from .tissues import CLASS_TO_LABEL

        return CLASS_TO_LABEL[self.classes(q_ed, c)]

    def sac(self, q_ed: np.ndarray) -> np.ndarray:
        """Inside the pericardial sac: the heart and its fat at end-systole (never lung; the larger
        diastolic heart is painted over it, so the lungs follow the heart's border)."""
        q = np.asarray(q_ed, dtype=np.float32).reshape(-1, 3)
        out = np.zeros(len(q), dtype=bool)
        lo, hi = self.heart_box()
        box = _box_idx(q, lo, hi)
        if box.size:
            out[box] = self.classes(q[box], 1.0) != NOT_HEART
        return out

    # --- world ------------------------------------------------------------------------------------
    def to_local(self, points: np.ndarray) -> np.ndarray:
        d = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.base
        return d[:, 0:1] * self.R[:, 0] + d[:, 1:2] * self.R[:, 1] + d[:, 2:3] * self.R[:, 2]

    def to_world(self, q: np.ndarray) -> np.ndarray:
        return self.base + np.asarray(q, dtype=np.float64) @ self.R

    @property
    def apex(self) -> np.ndarray:
        """Epicardial apex at ED, on the LV axis."""
        return self.base + (self.C + self.apex_wall) * self.w

    def base_at(self, c: float) -> np.ndarray:
        return self.base + self.shift * c * self.w

    def lv_centre(self) -> np.ndarray:
        """Mid-cavity point on the LV axis at ED (the pivot of the long-axis planning)."""
        return self.base + 0.5 * self.C * self.w

    # --- truth ------------------------------------------------------------------------------------
    def lv_volumes(self, c: float) -> dict[str, float]:
        ct, st, z, dA = self._quad()
        endo, epi = self.lv_radii(ct, st, z, c)
        length = self._length(c)
        cav = length * 0.5 * float(np.sum(endo * endo)) * dA
        epi_in = length * 0.5 * float(np.sum(epi * epi)) * dA
        _, epi1 = self.lv_radii(ct[:, :1], st[:, :1], np.ones_like(z[:, :1]), c)
        cap = (2.0 / 3.0) * self.apex_wall * 0.5 * float(np.sum(epi1 * epi1)) * (2 * np.pi / ct.shape[0])
        return {"lv_cavity": cav / 1000.0, "lv_myocardium": (epi_in + cap - cav) / 1000.0}

    def volumes(self, c: float) -> dict[str, float]:
        return {**self.lv_volumes(c), "rv_cavity": self.rv_volume(c, step=2.5)}

    def wall_stats(self, c: float) -> dict[str, float]:
        """Mean, min and max radial wall thickness (mm) over the basal-to-mid LV (depth 0.1-0.6)."""
        th = np.linspace(0, 2 * np.pi, 90, endpoint=False)
        z = np.linspace(0.1, 0.6, 11)
        T, Z = np.meshgrid(th, z, indexing="ij")
        endo, epi = self.lv_radii(np.cos(T), np.sin(T), Z, c)
        t = epi - endo
        return {"mean": float(t.mean()), "min": float(t.min()), "max": float(t.max())}

