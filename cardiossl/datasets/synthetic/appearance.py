"""What a version-2 image looks like: vendor contrast, texture, coil shading, bSSFP bands, flow, noise.

Randomised in the spirit of SynthSeg's domain randomisation (Billot et al., "SynthSeg:
Segmentation of brain MRI scans of any contrast and resolution without retraining", MedIA 2023),
but kept inside what balanced SSFP cine looks like, so the images stay plausible:

* contrast per vendor family with per-subject jitter, relative to LV blood: myocardium 0.18-0.35
  (blood-to-myocardium ratios of 3-5 in bSSFP cine), fat 0.7-1.1, liver 0.2-0.35, lung 0.02-0.06;
* texture: smooth random fields (two scales) modulate each tissue multiplicatively (liver, muscle,
  marrow, stomach most), and sparse bright spots stand for vessels in the lungs and liver;
* receive-coil shading: a sum of Gaussian sensitivity blobs on the anterior and posterior chest
  surface (phased-array coils), normalised to 1 at the heart and softened by a vendor-like intensity
  normalisation;
* bSSFP off-resonance bands: a smooth off-resonance field (offset, gradient, curvature, larger at
  3 T) puts a dark band where the precession per TR reaches pi (Bieri & Scheffler, JMRI 2013);
* flow: ghosts of the pulsatile blood along the phase-encoding direction, and signal voids of
  turbulent jets (LVOT at systole, mitral regurgitation) in some subjects;
* acquisition blur (acquired resolution coarser than the reconstructed pixels), Rician magnitude
  noise (Gudbjartsson & Patz, MRM 1995) at a blood SNR of 25-90 (x1.4 at 3 T), a circular field
  of view on GE-like images, and whole-number pixel values as scanners store them.

Randomised contrast (``contrast_rng`` given; ``cardiossl synth --random-contrast``) replaces the
vendor table by SynthSeg's rule: every tissue class draws its own intensity, uniform in [0, 1] of
the brightest (air stays dark), so blood, myocardium, fat and lung can take any order. Images stop
looking like bSSFP; a segmenter trained on them cannot lean on one contrast (the fat ring around
the heart, bright blood) and must learn shape, which is what transfers to scans it has not seen.
Everything else (texture, shading, bands, flow, noise) stays as drawn for the site.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from . import tissues as T

VENDORS = {
    "siemens": {"myo": (0.20, 0.32), "fat": (0.75, 1.05), "liver": (0.22, 0.32), "muscle": (0.16, 0.26),
                "snr": (35.0, 90.0), "normalise": (0.3, 0.7)},
    "ge": {"myo": (0.22, 0.35), "fat": (0.70, 0.95), "liver": (0.25, 0.35), "muscle": (0.18, 0.28),
           "snr": (25.0, 60.0), "normalise": (0.6, 1.0)},
    "philips": {"myo": (0.18, 0.30), "fat": (0.80, 1.10), "liver": (0.20, 0.30), "muscle": (0.15, 0.24),
                "snr": (30.0, 80.0), "normalise": (0.4, 0.8)},
}
# multiplicative texture amplitude (per unit of the smooth random field) and bright-spot gain
_TEXTURE = {T.LUNG: 0.5, T.LIVER: 0.08, T.MUSCLE: 0.15, T.SUBCUT_FAT: 0.08, T.PERICARDIAL_FAT: 0.08, T.MARROW: 0.2,
            T.STOMACH: 0.3, T.MEDIASTINUM: 0.2, T.LV_CAV: 0.08, T.RV_CAV: 0.09, T.ATRIUM: 0.08, T.LV_MYO: 0.05,
            T.HEART_WALL: 0.08, T.VESSEL: 0.05, T.AORTA: 0.05}
_SPOTS = {T.LUNG: 0.35, T.LIVER: 0.1, T.MEDIASTINUM: 0.2, T.STOMACH: 0.2}
DEFAULTS: dict = {
    "vendors": VENDORS,
    "coil_floor": (0.1, 0.4),  # shading floor: the body coil's share, relative to the surface elements
    "coil_gain": (0.5, 1.5),  # peak gain of one surface element
    "f0_sigma_hz": 15.0,  # off-resonance offset at the heart after shimming, at 1.5 T
    "band_depth": (0.5, 0.9),
    "ghost_p": 0.7,  # share of subjects with flow ghosts
    "ghost_amp": (0.02, 0.08),
    "blur_px": (0.3, 0.9),
    "trab_gain": (1.1, 1.8),  # LV trabeculae relative to myocardium (thin strands: partly blood in a pixel)
    "acceleration": None,  # parallel imaging: {"R": factors, "p": their shares, "g": g-factor range}
    "rv_blood": (0.85, 1.0),  # RV blood relative to LV blood
    "flow": None,  # blood-pool signal variation: {"amp": range, "scale_mm": range, "apical": range}
}
"""The version-2 image model; a later version passes ``options`` that replace some of these."""


class Appearance:
    """One subject's image model; draws from ``rng``, site facts from the acquisition meta."""

    def __init__(self, rng: np.random.Generator, vendor: str, field_t: float, pe: str, circle: bool,
                 heart, body_centre: np.ndarray, body_semi: tuple[float, float],
                 contrast_rng: np.random.Generator | None = None, options: dict | None = None,
                 accel_rng: np.random.Generator | None = None, flow_rng: np.random.Generator | None = None) -> None:
        u = rng.uniform
        o = {**DEFAULTS, **(options or {})}
        unknown = set(o) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown appearance options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        v = o["vendors"][vendor]
        self.vendor, self.field_t, self.pe, self.circle = vendor, field_t, pe, circle
        myo, fat, liver, muscle = u(*v["myo"]), u(*v["fat"]), u(*v["liver"]), u(*v["muscle"])
        lut = np.zeros(T.N_CLASSES, dtype=np.float32)
        lut[T.SUBCUT_FAT] = fat
        lut[T.MUSCLE] = muscle
        lut[T.BONE] = u(0.02, 0.08)
        lut[T.MARROW] = fat * u(0.45, 0.7)
        lut[T.CSF] = u(0.75, 1.0)
        lut[T.LUNG] = u(0.02, 0.06)
        lut[T.LIVER] = liver
        lut[T.STOMACH] = u(0.3, 0.6)
        lut[T.MEDIASTINUM] = u(0.12, 0.3)
        lut[T.PERICARDIAL_FAT] = fat * u(0.85, 1.0)
        lut[T.VESSEL] = u(0.8, 1.05)
        lut[T.HEART_WALL] = myo * u(0.9, 1.15)
        lut[T.RV_CAV] = u(*o["rv_blood"])
        lut[T.RV_TRAB] = myo * u(1.1, 1.6)  # thin strands: partly blood within a pixel
        lut[T.LV_MYO] = myo
        lut[T.LV_CAV] = 1.0
        lut[T.LV_PAP] = myo * u(0.95, 1.2)
        lut[T.LV_TRAB] = myo * u(*o["trab_gain"])
        lut[T.ATRIUM] = u(0.85, 1.0)
        lut[T.AORTA] = u(0.85, 1.05)
        self.randomised = contrast_rng is not None
        if self.randomised:  # SynthSeg-style: an independent intensity per tissue class
            lut[1:] = contrast_rng.uniform(0.0, 1.0, size=T.N_CLASSES - 1)
            lut /= lut.max()
        self.scale = float(u(150.0, 1200.0))
        self.lut = lut
        self.tex = np.zeros(T.N_CLASSES, dtype=np.float32)
        gain = u(0.6, 1.4)
        for k, a in _TEXTURE.items():
            self.tex[k] = lut[k] * a * gain
        self.spots = np.zeros(T.N_CLASSES, dtype=np.float32)
        for k, a in _SPOTS.items():
            self.spots[k] = a * u(0.5, 1.2)
        self.tex_fine_mm, self.tex_coarse_mm = u(1.0, 2.0), u(5.0, 10.0)
        # coil shading: Gaussian blobs on the anterior and posterior chest surface
        lv = heart.lv_centre()
        bx, by = body_semi
        coils = []
        for side, n_el in ((-1.0, int(rng.integers(2, 5))), (1.0, int(rng.integers(1, 4)))):
            for _ in range(n_el):
                c = np.array([body_centre[0] + u(-0.7, 0.7) * bx, body_centre[1] + side * by * u(0.9, 1.1),
                              lv[2] + u(-80.0, 80.0)])
                coils.append((c, u(45.0, 85.0), u(*o["coil_gain"]) * (1.0 if side < 0 else 0.7)))
        self.coils = coils
        self.coil_floor = u(*o["coil_floor"])
        self.coil_gamma = u(*v["normalise"])
        self.bias_ref = 1.0
        self.bias_ref = float(self.bias(lv[None])[0])
        # bSSFP off-resonance: shimmed on the heart (small there), growing towards the periphery
        self.tr_ms = u(2.6, 3.8)
        g = rng.normal(size=3)
        k = field_t / 1.5
        self.f0 = rng.normal(0.0, o["f0_sigma_hz"] * k)
        self.f_grad = g / np.linalg.norm(g) * u(0.05, 0.5) * k
        # curvature: a random symmetric form (eigenvalues of either sign), so bands are ellipses or
        # hyperbolae of any orientation, not rings around the heart
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        self.f_curv = (rot * (u(-1.0, 1.0, 3) * u(0.0005, 0.004) * k)) @ rot.T
        self.f_centre = lv + rng.normal(0.0, 40.0, 3)
        self.band_width, self.band_depth = u(0.08, 0.2), u(*o["band_depth"])
        # flow: ghosts and jets
        self.ghosts = []
        if rng.random() < o["ghost_p"]:
            for _ in range(int(rng.integers(1, 3))):
                self.ghosts.append((u(0.12, 0.45) * rng.choice([-1.0, 1.0]), u(*o["ghost_amp"])))
        self.resp_ghost = (u(0.1, 0.3), u(0.01, 0.03)) if rng.random() < 0.3 else None
        self.jets = []
        if rng.random() < 0.5:  # LVOT jet at systole
            p = heart.ao_p0 + u(-5.0, 20.0) * heart.ao_dir
            self.jets.append(("lvot", p, u(5.0, 9.0), u(0.3, 0.7)))
        if rng.random() < (0.5 if heart.phenotype["group"] in ("DCM", "MINF") else 0.1):  # mitral regurgitation
            p = heart.la_c * np.array([0.5, 0.5, 0.3]) + np.array([0.0, 0.0, -6.0])
            self.jets.append(("mitral", p, u(5.0, 10.0), u(0.4, 0.8)))
        self.snr = u(*v["snr"]) * (1.4 if field_t >= 3.0 else 1.0)
        self.blur_px = u(*o["blur_px"])
        self.acceleration = None
        if o["acceleration"] is not None:  # SNR / (g sqrt(R)) (Pruessmann et al., MRM 1999)
            if accel_rng is None:
                raise ValueError("the acceleration option needs accel_rng (its own stream)")
            acc = o["acceleration"]
            r = int(accel_rng.choice(acc["R"], p=acc["p"]))
            g = float(accel_rng.uniform(*acc["g"])) if r > 1 else 1.0
            self.acceleration = {"R": r, "g": g}
            self.snr /= g * np.sqrt(r)
        self.flow = None
        if o["flow"] is not None:  # drawn from its own stream: every other draw is unchanged
            if flow_rng is None:
                raise ValueError("the flow option needs flow_rng (its own stream)")
            f, slow = o["flow"], 1.5 if heart.phenotype["group"] == "DCM" else 1.0
            self.flow = {"amp": float(flow_rng.uniform(*f["amp"])), "scale_mm": float(flow_rng.uniform(*f["scale_mm"])),
                         "apical": float(min(flow_rng.uniform(*f["apical"]) * slow, 0.6))}
            self.flow_rng = flow_rng

    # --- fields -----------------------------------------------------------------------------------
    def bias(self, points: np.ndarray) -> np.ndarray:
        """Receive-coil shading at world points (N, 3), 1 at the LV centre."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        b = np.full(len(p), self.coil_floor)
        for c, sigma, gain in self.coils:
            b += gain * np.exp(-np.sum(np.square(p - c), axis=1) / (2 * sigma * sigma))
        return (b**self.coil_gamma / self.bias_ref).astype(np.float32)

    def bias_image(self, plane, shape: tuple[int, int], step: int = 8) -> np.ndarray:
        """Coil shading on a slice's pixel grid, computed every ``step`` pixels (it is smooth) and interpolated."""
        from scipy.ndimage import map_coordinates

        rows, cols = shape
        rr, cc = np.mgrid[0 : rows + step : step, 0 : cols + step : step]
        coarse = self.bias(plane.pixel_to_world(rr, cc).reshape(-1, 3)).reshape(rr.shape)
        fr, fc = np.mgrid[0:rows, 0:cols].astype(np.float32) / step
        return map_coordinates(coarse, [fr, fc], order=1, mode="nearest").ravel()

    def banding(self, points: np.ndarray) -> np.ndarray:
        """Signal factor of bSSFP off-resonance: dark where the phase per TR reaches pi (mod 2 pi)."""
        d = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.f_centre
        f = self.f0 + d @ self.f_grad + np.einsum("ij,jk,ik->i", d, self.f_curv, d)
        phase = 2 * np.pi * f * self.tr_ms / 1000.0
        dist = np.angle(np.exp(1j * (phase - np.pi)))
        return (1.0 - self.band_depth * np.exp(-0.5 * np.square(dist / self.band_width))).astype(np.float32)

    def jet_factor(self, q_local: np.ndarray, c: float) -> np.ndarray:
        """Signal factor of turbulent jets at contraction c (systolic: strongest at ES)."""
        out = np.ones(len(q_local), dtype=np.float32)
        for _, p, r, depth in self.jets:
            d2 = np.sum(np.square(q_local - p), axis=1)
            out *= (1.0 - depth * c * c * np.exp(-0.5 * d2 / (r * r))).astype(np.float32)
        return out

    def textures(self, rng: np.random.Generator, shape: tuple[int, int], pixel_mm: float):
        """(smooth field, sparse spots) on one slice's pixel grid, unit-variance fields."""
        def field(sigma_mm):
            f = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_mm / pixel_mm)
            return f / max(float(f.std()), 1e-6)

        smooth = 0.7 * field(self.tex_fine_mm) + 0.7 * field(self.tex_coarse_mm)
        spots = np.clip(field(self.tex_fine_mm * 0.8) - 2.2, 0.0, None) * 2.0
        return smooth.ravel(), spots.ravel()

    def flow_factor(self, shape: tuple[int, int], pixel_mm: float, depth: np.ndarray) -> np.ndarray:
        """Signal factor of the blood pool on one slice (flattened), from ``flow_rng``.

        Blood in cine bSSFP is not uniformly bright: inflow, in-plane flow patterns and dephasing make
        smooth brighter and darker regions, and slow flow near the apex (most in dilated ventricles)
        is darker (Scheffler & Lehnhardt, Eur Radiol 2003; Bieri & Scheffler, JMRI 2013). A smooth
        random field of the drawn scale and amplitude, less a darkening that grows towards the apex
        (``depth``: the LV-axis depth of each pixel as a share of the base-to-apex length)."""
        f = gaussian_filter(self.flow_rng.standard_normal(shape, dtype=np.float32), self.flow["scale_mm"] / pixel_mm)
        f = (f / max(float(f.std()), 1e-6)).ravel()
        apical = self.flow["apical"] * np.square(np.clip(depth, 0.0, 1.0))
        return np.clip(1.0 + self.flow["amp"] * f - apical, 0.3, 1.8).astype(np.float32)

    # --- the image --------------------------------------------------------------------------------
    def finish(self, clean: np.ndarray, blood: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ghosts, blur, noise, mask and integer values on a noiseless image (relative to LV blood)."""
        axis = 0 if self.pe == "rows" else 1
        n = clean.shape[axis]
        img = clean.copy()
        src = clean * blood
        for frac, amp in self.ghosts:
            img += amp * np.roll(src, int(round(frac * n)), axis=axis)
        if self.resp_ghost is not None:
            frac, amp = self.resp_ghost
            k = int(round(frac * n))
            img += amp * (np.roll(clean, k, axis=axis) + np.roll(clean, -k, axis=axis))
        if self.blur_px > 0.35:
            img = gaussian_filter(img, self.blur_px)
        sigma = 1.0 / self.snr
        n1 = rng.standard_normal(img.shape, dtype=np.float32)
        n2 = rng.standard_normal(img.shape, dtype=np.float32)
        img = np.hypot(img + sigma * n1, sigma * n2) * self.scale
        if self.circle:
            rr, cc = np.ogrid[: img.shape[0], : img.shape[1]]
            r0, c0 = (img.shape[0] - 1) / 2, (img.shape[1] - 1) / 2
            img[(rr - r0) ** 2 + (cc - c0) ** 2 > (0.5 * min(img.shape)) ** 2] = 0.0
        return np.rint(img).astype(np.float32)

    def meta(self) -> dict:
        out = {
            "vendor": self.vendor,
            "contrast": {"myocardium": float(self.lut[T.LV_MYO]), "fat": float(self.lut[T.SUBCUT_FAT]),
                         "liver": float(self.lut[T.LIVER]), "lung": float(self.lut[T.LUNG])},
            "snr": float(self.snr),
            "blur_px": float(self.blur_px),
            "coil_elements": len(self.coils),
            "tr_ms": float(self.tr_ms),
            "off_resonance_gradient_hz_per_mm": float(np.linalg.norm(self.f_grad)),
            "ghosts": [[float(f), float(a)] for f, a in self.ghosts],
            "jets": [name for name, *_ in self.jets],
            "phase_encoding": self.pe,
            "circular_fov": bool(self.circle),
        }
        if self.acceleration is not None:
            out["acceleration"] = dict(self.acceleration)
        if self.flow is not None:
            out["flow"] = dict(self.flow)
        if self.randomised:  # only then: the meta of site-contrast subjects stays as it always was
            out["contrast_mode"] = "randomised"
            out["contrast"]["table"] = {name: float(v) for name, v in zip(T.NAMES, self.lut)}
        return out
