"""Sampling a version-2 subject on one planned slice: a slab of sub-planes through the displaced anatomy.

Every pixel is evaluated from the implicit shapes at its world position (no 3-D volume). A slice
whose breath-hold found the anatomy displaced by ``d`` samples the anatomy at ``p - d``: its pixels
show, and its labels are, what was really at its recorded plane.

Intensities are sampled on the *acquired* grid (``factor`` times coarser than the reconstructed
pixels at sites that interpolate, as scanners do) and interpolated to the reconstructed grid;
texture, shading, ghosts, blur and noise are added there. Labels are the classes at the slab's
centre plane on the reconstructed grid. The torso does not change over the cycle, so it is evaluated
once per slice; only points whose slab meets the heart's bounding box are re-evaluated per frame.
"""

from __future__ import annotations

import numpy as np

from .acquisition import SlicePlan
from .appearance import Appearance
from .heart import Heart, _box_idx
from .tissues import BLOOD, CLASS_TO_LABEL, NAMES, NOT_HEART
from .torso import Torso

_BLOOD = np.zeros(256, dtype=np.float32)
_BLOOD[list(BLOOD)] = 1.0
_HEART_CLASSES = frozenset(range(NAMES.index("pericardial_fat"), len(NAMES)))


def _grid_points(plane, rows: int, cols: int, factor: float) -> tuple[np.ndarray, tuple[int, int]]:
    """World points of a grid ``factor`` times coarser than the plane's pixels (same field of view)."""
    rc, cc = int(np.ceil(rows / factor)), int(np.ceil(cols / factor))
    r, c = np.mgrid[0:rc, 0:cc].astype(np.float64)
    off = (factor - 1) / 2.0
    return plane.pixel_to_world(r * factor + off, c * factor + off).reshape(-1, 3), (rc, cc)


class _Bilinear:
    """Separable bilinear interpolation from the acquired grid to the reconstructed one (indices once)."""

    def __init__(self, coarse: tuple[int, int], fine: tuple[int, int], factor: float) -> None:
        off = (factor - 1) / 2.0
        self.axes = []
        for n_c, n_f in zip(coarse, fine):
            x = np.clip((np.arange(n_f) - off) / factor, 0.0, n_c - 1.0)
            i0 = np.minimum(np.floor(x).astype(np.intp), n_c - 1)
            i1 = np.minimum(i0 + 1, n_c - 1)
            self.axes.append((i0, i1, (x - i0).astype(np.float32)))
        self.coarse = coarse

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        """(k, n_coarse) -> (k, rows, cols)."""
        (r0, r1, wr), (c0, c1, wc) = self.axes
        img = stack.reshape(-1, *self.coarse)
        rows = img[:, r0, :] * (1 - wr)[None, :, None] + img[:, r1, :] * wr[None, :, None]
        return rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc


def _heart_pixels(heart: Heart, local: np.ndarray, normal_local: np.ndarray, half: float) -> np.ndarray:
    lo, hi = heart.heart_box()
    reach = np.abs(normal_local) * half
    return _box_idx(local, lo - reach, hi + reach)


def render(
    heart: Heart,
    torso: Torso,
    look: Appearance,
    plan: SlicePlan,
    cs: list[float],
    label_frames: set[int],
    n_sub: int,
    noise_rng: np.random.Generator,
    texture_rng: np.random.Generator,
    factor: float = 1.0,
) -> tuple[list[np.ndarray], dict[int, np.ndarray], list[str]]:
    """(image per frame, label per labelled frame, names of the heart structures on the ED centre plane)."""
    plane, (rows, cols) = plan.plane, plan.shape
    normal = plane.normal
    n_loc = (heart.R @ normal).astype(np.float32)
    # --- acquired grid: torso once, heart per frame
    pts, shape_c = _grid_points(plane, rows, cols, factor)
    anat = pts - plan.displacement  # where the anatomy seen at each point sits when at rest
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * plan.thickness
    n_static = min(n_sub, 2)  # the torso's partial volume needs fewer sub-planes than the heart's
    off_static = ((np.arange(n_static) + 0.5) / n_static - 0.5) * plan.thickness
    static = np.stack([torso.classes(anat + o * normal, sac=False) for o in off_static])
    torso.apply_sac(anat, static)
    lut, tex, spots = look.lut, look.tex, look.spots
    s_base, s_tex, s_spot, s_blood = (t[static].mean(0) for t in (lut, tex, spots, _BLOOD))
    q_c = heart.to_local(anat).astype(np.float32)
    pix = _heart_pixels(heart, q_c, n_loc, plan.thickness / 2.0)
    q_box = (q_c[None, pix, :] + offsets.astype(np.float32)[:, None, None] * n_loc).reshape(-1, 3)
    nearest = np.clip(np.rint((offsets / plan.thickness + 0.5) * n_static - 0.5).astype(int), 0, n_static - 1)
    static_box = static[nearest][:, pix]
    # --- reconstructed grid: labels at the slab centre, texture and shading
    centre = plane.pixel_to_world(*np.mgrid[0:rows, 0:cols]).reshape(-1, 3)
    q_f = heart.to_local(centre - plan.displacement).astype(np.float32)
    pix_f = _heart_pixels(heart, q_f, n_loc, 0.0)
    smooth, spot_field = look.textures(texture_rng, (rows, cols), float(min(plane.spacing)))
    shade = look.bias_image(plane, (rows, cols)) * look.banding(centre)
    flow = None
    if look.flow is not None:  # a later version's blood-pool variation (version 2 computes exactly as before)
        flow = look.flow_factor((rows, cols), float(min(plane.spacing)), q_f[:, 2] / heart.C) - 1.0
    upsample = _Bilinear(shape_c, (rows, cols), factor)
    images, labels, content = [], {}, []
    for frame, c in enumerate(cs):
        h = heart.classes(q_box, c).reshape(n_sub, len(pix))
        cls = np.where(h != NOT_HEART, h, static_box)
        base, tx, sp, blood = s_base.copy(), s_tex.copy(), s_spot.copy(), s_blood.copy()
        base[pix], tx[pix], sp[pix], blood[pix] = (t[cls].mean(0) for t in (lut, tex, spots, _BLOOD))
        base[pix] *= look.jet_factor(q_c[pix], c)
        up = upsample(np.stack([base, tx, sp, blood])).reshape(4, -1)
        clean = (up[0] + up[1] * smooth + up[2] * spot_field) * shade
        if flow is not None:
            clean = clean * (1.0 + up[3] * flow)
        images.append(look.finish(clean.reshape(rows, cols), up[3].reshape(rows, cols), noise_rng))
        if frame in label_frames or frame == 0:
            hc = heart.classes(q_f[pix_f], c)
            lab = np.zeros(rows * cols, dtype=np.uint8)
            lab[pix_f] = CLASS_TO_LABEL[hc]
            if frame in label_frames:
                labels[frame] = lab.reshape(rows, cols)
            if frame == 0:
                content = [NAMES[k] for k in np.unique(hc) if k in _HEART_CLASSES]
    return images, labels, content
