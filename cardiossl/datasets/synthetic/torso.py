"""The version-2 torso around a heart: chest wall, ribs, lungs, mediastinum, spine, liver, stomach, arms.

The chest is an elliptic cylinder (half-width 135-175 mm, half-depth 100-130 mm, adult ranges of
thoracic CT anthropometry) placed around the heart, not the heart in it: its inner anterior wall
lies a few mm in front of the heart's most anterior point, its centre to the right of and behind
the heart, and the diaphragm's central tendon just under the heart's lowest point, with the right
dome higher than the left (over the liver). Lungs fill the thorax above the diaphragm outside the
mediastinum and the pericardial sac, so they wrap the heart as in real images. Layers from the skin:
subcutaneous fat (4-18 mm), chest-wall muscle (thicker anteriorly and over the spine), ribs
(sloping bands of marrow in a cortical rim); posteriorly the vertebral body, spinal canal and
descending aorta. Arms lie beside the chest in some subjects (UK Biobank images them at the sides).
"""

from __future__ import annotations

import numpy as np

from .heart import Heart
from .tissues import (
    AIR,
    BONE,
    CSF,
    LIVER,
    LUNG,
    MARROW,
    MEDIASTINUM,
    MUSCLE,
    NOT_HEART,
    STOMACH,
    SUBCUT_FAT,
    VESSEL,
)


class Torso:
    """Static classes (everything but the heart) at world points; placed around ``heart``."""

    def __init__(self, rng: np.random.Generator, heart: Heart, anchor: Heart | None = None) -> None:
        """``anchor``: the heart the torso is built around when it is not ``heart`` (a later version's
        heart with other fat sits in the torso its version-2 twin has); the sac follows ``heart``."""
        u = rng.uniform
        self.heart = heart
        heart = heart if anchor is None else anchor
        # the heart's extent in world coordinates, from its classes on a coarse grid
        lo, hi = heart.heart_box()
        axes = [np.arange(lo[i], hi[i], 5.0) for i in range(3)]
        g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        inside = heart.classes(g, 0.0) != NOT_HEART
        pts = heart.to_world(g[inside])
        centre = heart.lv_centre()
        self.bx, self.by = u(135.0, 175.0), u(100.0, 130.0)
        self.subcut = u(4.0, 18.0)
        self.fat_lateral = u(0.0, 1.5)
        self.back_flat = u(0.0, 1.0)
        self.muscle = u(6.0, 12.0)
        wall = self.subcut + self.muscle * 1.5 + 4.0  # skin to the inner anterior chest wall
        cy = pts[:, 1].min() - u(2.0, 12.0) - wall + self.by  # inner anterior wall just in front of the heart
        cx = min(centre[0] - u(15.0, 40.0), pts[:, 0].max() + u(5.0, 25.0) + wall - self.bx)
        self.c = np.array([cx, cy])
        z_low = pts[:, 2].min()
        self.tendon = z_low - u(3.0, 8.0)
        self.dome_r = (self.tendon + u(5.0, 25.0), np.array([-0.45 * self.bx, 0.1 * self.by]))
        self.dome_l = (self.tendon + u(-8.0, 5.0), np.array([0.45 * self.bx, 0.0]))
        self.dome_curv = u(120.0, 200.0)
        self.liver_edge = u(10.0, 50.0)  # how far left of the body centre the liver reaches anteriorly
        # posterior structures
        self.spine_r = u(17.0, 22.0)
        self.spine = np.array([cx + u(-5.0, 5.0), cy + self.by - self.subcut - self.muscle * 2.5 - self.spine_r - 8.0])
        self.dao_r = u(10.0, 14.0)
        self.dao = self.spine + np.array([u(18.0, 30.0), -self.spine_r - self.dao_r - u(2.0, 8.0)])
        self.eso = self.spine + np.array([u(-5.0, 5.0), -self.spine_r - u(12.0, 18.0)])
        ra_world = heart.to_world(heart.ra_c)
        self.ivc = np.array([ra_world[0] + u(-5.0, 5.0), ra_world[1] + u(0.0, 15.0)])
        self.ivc_r = u(10.0, 14.0)
        self.rib_pitch, self.rib_w = u(24.0, 32.0), u(9.0, 13.0)
        self.rib_phase, self.rib_slope = u(0.0, 1.0), u(0.35, 0.7)
        self.med_x = float(0.5 * (self.spine[0] + self.dao[0]) - cx)
        self.med_y = float(heart.lv_centre()[1] - cy)
        self.arms = rng.random() < 0.6
        self.arm_r = u(38.0, 50.0)
        self.arm_gap = u(5.0, 30.0)
        self.arm_y = u(-10.0, 30.0)

    def diaphragm(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Height (z, mm) of the diaphragm: the max of the right dome, left dome and central tendon."""
        k = 0.5 / self.dome_curv
        zr, pr = self.dome_r
        zl, pl = self.dome_l
        right = zr - k * ((dx - pr[0]) ** 2 + (dy - pr[1]) ** 2)
        left = zl - k * ((dx - pl[0]) ** 2 + (dy - pl[1]) ** 2)
        central = self.tendon - 0.5 * k * (dx**2 + dy**2)
        return np.maximum(np.maximum(right, left), central)

    def classes(self, points: np.ndarray, sac: bool = True) -> np.ndarray:
        """Tissue classes at world points (N, 3); ``sac=False`` leaves the pericardial sac to the caller
        (``apply_sac``), which can then test it once for several sub-planes."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        dx = (p[:, 0] - self.c[0]).astype(np.float32)
        dy = (p[:, 1] - self.c[1]).astype(np.float32)
        z = p[:, 2].astype(np.float32)
        bx, by = self.bx, self.by
        # elliptic "radius" (1 on the skin; the back flattened by lying on the table) and the depth
        # below the skin along it (approximately, mm)
        ay = np.abs(dy) / by
        rho = np.sqrt((dx / bx) ** 2 + np.where(dy > 0, ay**3 * (1.0 + self.back_flat * ay), ay * ay))
        scale = np.sqrt((dx * dx + dy * dy) / np.maximum(rho * rho, 1e-6))  # skin distance from the centre
        depth = (1.0 - rho) * scale
        out = np.full(len(p), AIR, dtype=np.uint8)
        body = rho <= 1.0
        out[body] = SUBCUT_FAT
        ant = np.clip(-dy / by, 0.0, 1.0)
        post = np.clip(dy / by, 0.0, 1.0)
        lateral = np.clip(np.abs(dx) / bx, 0.0, 1.0)
        fat = self.subcut * (1.0 + self.fat_lateral * lateral**2 - 0.5 * post)  # thickest at the flanks
        musc = self.muscle * (1.0 + 0.8 * ant + 2.5 * post**2)
        m_in = fat + musc
        out[body & (depth >= fat)] = MUSCLE
        # ribs: sloping bands in the inner part of the chest wall
        rib_zone = body & (depth >= m_in - 6.0) & (depth < m_in + 4.0)
        ri = np.flatnonzero(rib_zone)
        if ri.size:
            ph = ((z[ri] + self.rib_slope * dy[ri]) / self.rib_pitch + self.rib_phase) % 1.0
            band = ph < self.rib_w / self.rib_pitch
            edge = band & ((ph < 1.5 / self.rib_pitch) | (ph > (self.rib_w - 1.5) / self.rib_pitch))
            out[ri[band]] = MARROW
            out[ri[edge]] = BONE
        inner = body & (depth >= m_in + 4.0)
        # thorax above the diaphragm: lungs except the mediastinum and the pericardial sac
        dia = self.diaphragm(dx, dy)
        above = inner & (z > dia)
        out[above] = LUNG
        # posterior mediastinum: between the heart and the spine (oesophagus, descending aorta)
        med = above & (np.abs(dx - self.med_x) < 16.0) & (dy > self.med_y)
        out[med] = MEDIASTINUM
        below = inner & (z <= dia)
        liver = below & (dx < self.liver_edge + 40.0 * ant - 30.0 * post)
        out[below] = STOMACH
        out[liver] = LIVER
        # posterior structures
        ds2 = (dx - (self.spine[0] - self.c[0])) ** 2 + (dy - (self.spine[1] - self.c[1])) ** 2
        out[inner & (ds2 <= (self.spine_r + 14.0) ** 2) & (dy > self.spine[1] - self.c[1])] = MUSCLE
        out[ds2 <= self.spine_r**2] = BONE
        out[ds2 <= (self.spine_r - 2.0) ** 2] = MARROW
        canal = (dx - (self.spine[0] - self.c[0])) ** 2 + (dy - (self.spine[1] - self.c[1] + self.spine_r + 9.0)) ** 2
        out[canal <= 12.0**2] = BONE
        out[canal <= 8.0**2] = CSF
        da2 = (dx - (self.dao[0] - self.c[0])) ** 2 + (dy - (self.dao[1] - self.c[1])) ** 2
        out[inner & (da2 <= (self.dao_r + 1.5) ** 2)] = MEDIASTINUM
        out[inner & (da2 <= self.dao_r**2)] = VESSEL
        de2 = (dx - (self.eso[0] - self.c[0])) ** 2 + (dy - (self.eso[1] - self.c[1])) ** 2
        out[above & (de2 <= 8.0**2)] = MEDIASTINUM
        di2 = (dx - (self.ivc[0] - self.c[0])) ** 2 + (dy - (self.ivc[1] - self.c[1])) ** 2
        out[below & (di2 <= self.ivc_r**2)] = VESSEL
        if sac:
            self.apply_sac(p, out[None])
        if self.arms:
            for side in (-1.0, 1.0):
                ax = dx - side * (bx + self.arm_gap + self.arm_r)
                ay = dy - self.arm_y
                ar2 = ax * ax + ay * ay
                out[ar2 <= self.arm_r**2] = SUBCUT_FAT
                out[ar2 <= (self.arm_r - 8.0) ** 2] = MUSCLE
                hx = ax + side * 6.0
                h2 = hx * hx + ay * ay
                out[h2 <= 12.0**2] = BONE
                out[h2 <= 9.0**2] = MARROW
        return out

    def apply_sac(self, points: np.ndarray, classes: np.ndarray) -> None:
        """Turn lung inside the pericardial sac at ``points`` into mediastinum, in every row of
        ``classes`` (sub-planes, N): the sac is never lung."""
        lung = np.flatnonzero(np.any(classes == LUNG, axis=0))
        if lung.size:
            inside = lung[self.heart.sac(self.heart.to_local(points[lung]))]
            sub = classes[:, inside]
            sub[sub == LUNG] = MEDIASTINUM
            classes[:, inside] = sub

    def meta(self) -> dict:
        return {
            "chest_half_width_mm": float(self.bx),
            "chest_half_depth_mm": float(self.by),
            "subcutaneous_fat_mm": float(self.subcut),
            "diaphragm_tendon_z_mm": float(self.tendon),
            "arms_at_sides": bool(self.arms),
        }
