"""Training-time augmentation that keeps slice geometry exact.

Spatial augmentation here is not an image warp followed by hoping the targets still agree: it
picks a perturbed imaging plane (rotated about the slice normal, scaled, translated in-plane),
resamples the stored image (and label) onto it, and writes that plane back into
``sample["plane"]``. A geometric pretext (anatomical position, Bai et al. 2019) then computes its
targets from the plane the network actually sees, so a rotated image gets rotated trace lines by
construction. The same step crops or pads to ``image_size`` at the store's spacing.

Intensity augmentation (gamma, contrast, Gaussian noise) follows the usual CMR recipe
(nnU-Net, Isensee et al. 2021). Appearance randomisation (``augment.appearance``: a random
monotone contrast remap, a smooth bias field, blur, a scale and shift of the z-score) is for
training on one cohort and testing on another, e.g. on synthetic subjects only: the label-free
counterpart of SynthSeg's domain randomisation (Billot et al., MedIA 2023). Every random draw
comes from the ``rng`` the dataset passes in, seeded from (seed, epoch, rank, index), so a
resumed run sees the same samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardiossl.datasets.geometry import Plane

from ..config import AppearanceAugment, AugmentConfig, IntensityAugment, SpatialAugment


def perturbed_plane(
    plane: Plane,
    in_shape: tuple[int, int],
    out_shape: tuple[int, int],
    angle_rad: float = 0.0,
    scale: float = 1.0,
    shift_mm: tuple[float, float] = (0.0, 0.0),
) -> Plane:
    """The plane of an ``out_shape`` image centred on ``plane``'s image centre (+ shift), rotated
    by ``angle_rad`` about the normal and zoomed by ``scale`` (>1 magnifies: smaller pixels)."""
    centre = plane.center(in_shape)
    centre = centre + shift_mm[0] * plane.row_dir + shift_mm[1] * plane.col_dir
    ca, sa = math.cos(angle_rad), math.sin(angle_rad)
    row = ca * plane.row_dir + sa * plane.col_dir
    col = -sa * plane.row_dir + ca * plane.col_dir
    spacing = (plane.spacing[0] / scale, plane.spacing[1] / scale)
    origin = (
        centre
        - (out_shape[0] - 1) / 2.0 * spacing[0] * col
        - (out_shape[1] - 1) / 2.0 * spacing[1] * row
    )
    return Plane(origin, row, col, spacing)


def _src_coords(src: Plane, dst: Plane) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) with src (row, col) = matrix @ dst (row, col) + offset (coplanar grids)."""
    d = dst.origin - src.origin
    sr, sc = src.spacing
    dr, dc = dst.spacing
    matrix = np.array([
        [dr * (dst.col_dir @ src.col_dir) / sr, dc * (dst.row_dir @ src.col_dir) / sr],
        [dr * (dst.col_dir @ src.row_dir) / sc, dc * (dst.row_dir @ src.row_dir) / sc],
    ])
    return matrix, np.array([d @ src.col_dir / sr, d @ src.row_dir / sc])


def resample_to_plane(
    image: np.ndarray, src: Plane, dst: Plane, out_shape: tuple[int, int], order: int, cval: float
) -> np.ndarray:
    """Sample ``image`` (on plane ``src``) at every pixel of ``dst`` (both in one 3-D plane).

    Two coplanar grids are related by a 2-D affine map of pixel indices; the sampling is one
    ``torch.nn.functional.grid_sample`` call (bilinear for order 1, nearest for order 0), several
    times faster on a CPU than scipy's generic ``affine_transform``. Outside the source, values
    fade to ``cval`` over one pixel (as scipy's ``grid-constant``), so round-off at the border
    reads the border pixel."""
    import torch
    import torch.nn.functional as F

    m, o = _src_coords(src, dst)
    h, w = out_shape
    H, W = image.shape
    r = np.arange(h, dtype=np.float64)[:, None]
    c = np.arange(w, dtype=np.float64)[None, :]
    grid = np.empty((1, h, w, 2), dtype=np.float32)
    grid[0, :, :, 0] = (m[1, 0] * r + m[1, 1] * c + o[1]) * (2.0 / max(W - 1, 1)) - 1.0  # x: column
    grid[0, :, :, 1] = (m[0, 0] * r + m[0, 1] * c + o[0]) * (2.0 / max(H - 1, 1)) - 1.0  # y: row
    src_t = torch.from_numpy(np.asarray(image, dtype=np.float32) - np.float32(cval))[None, None]
    out = F.grid_sample(src_t, torch.from_numpy(grid), mode="bilinear" if order else "nearest",
                        padding_mode="zeros", align_corners=True)
    res = out[0, 0].numpy() + np.float32(cval)
    if order == 0:
        return np.rint(res).astype(image.dtype)
    return res.astype(image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32, copy=False)


def crop_or_pad(sample: dict, size: int, labels: bool = True) -> dict:
    """Centre crop/pad to ``size`` keeping spacing and geometry (integer pixel offsets only)."""
    image = sample["image"]
    h, w = image.shape[-2:]
    if (h, w) == (size, size):
        return sample if labels else _without_label(sample)
    plane = Plane.from_vector(sample["plane"])
    dst = perturbed_plane(plane, (h, w), (size, size))
    return _apply_plane(sample, plane, dst, (size, size), labels)


def _without_label(sample: dict) -> dict:
    out = dict(sample)
    out.pop("label", None)
    return out


def _apply_plane(sample: dict, src: Plane, dst: Plane, out_shape: tuple[int, int], labels: bool = True) -> dict:
    """Resample image (and label, unless ``labels`` is False: then the label is dropped, never left
    on the old grid) onto ``dst`` and record ``dst`` as the sample's plane."""
    out = dict(sample)
    img = sample["image"]
    chans = [
        resample_to_plane(img[k], src, dst, out_shape, order=1, cval=float(img[k].min()))
        for k in range(img.shape[0])
    ]
    out["image"] = np.stack(chans).astype(np.float32, copy=False)
    if labels and sample.get("label") is not None:
        lab = np.asarray(sample["label"])
        out["label"] = resample_to_plane(lab, src, dst, out_shape, order=0, cval=0).astype(lab.dtype)
    else:
        out.pop("label", None)
    out["plane"] = dst.to_vector()
    return out


@dataclass(frozen=True)
class IntensityDraw:
    """One sample's intensity augmentation: gamma, contrast factor, noise std (None: not applied)."""

    gamma: float | None = None
    contrast: float | None = None
    noise_std: float | None = None

    @staticmethod
    def to_vector(draw: IntensityDraw | None) -> np.ndarray:
        """[applied, gamma, contrast, noise std] with the identity for what is not applied."""
        if draw is None:
            return np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32)
        return np.array([1.0, 1.0 if draw.gamma is None else draw.gamma,
                         1.0 if draw.contrast is None else draw.contrast,
                         0.0 if draw.noise_std is None else draw.noise_std], dtype=np.float32)


@dataclass(frozen=True)
class AppearanceDraw:
    """One sample's appearance randomisation (None: that step is not applied).

    ``remap``: the intensities the control points at ``linspace(0, 1, n)`` of the sample's own range
    map to (increasing, from 0 to 1); ``bias``: the degree-3 polynomial's 10 coefficients, scaled so
    the largest log gain over the image is ``bias_gain``; ``blur``: Gaussian sigma in pixels;
    ``brightness`` and ``offset``: ``x * brightness + offset * std`` on the normalised image."""

    remap: np.ndarray | None = None
    bias: np.ndarray | None = None
    bias_gain: float = 0.0
    blur: float | None = None
    brightness: float | None = None
    offset: float | None = None


def draw_appearance(cfg: AppearanceAugment | None, rng: np.random.Generator) -> AppearanceDraw | None:
    """The appearance draws of one sample, or None when nothing is drawn (``cfg`` None or p = 0)."""
    if cfg is None or cfg.p <= 0:
        return None
    remap = bias = blur = brightness = offset = None
    gain = 0.0
    if cfg.remap_points is not None and rng.random() < cfg.p:
        n = cfg.remap_points
        ref = np.linspace(0.0, 1.0, n)
        remap = ref.copy()
        for i in range(1, n - 1):  # each point between its new left neighbour and its old right one
            remap[i] = rng.uniform(remap[i - 1], ref[i + 1])
    if cfg.bias_field is not None and rng.random() < cfg.p:
        bias = rng.uniform(-1.0, 1.0, size=10)
        gain = float(rng.uniform(0.25, 1.0) * cfg.bias_field)
    if cfg.blur_sigma_px is not None and rng.random() < cfg.p:
        blur = float(rng.uniform(*cfg.blur_sigma_px))
    if cfg.brightness is not None and rng.random() < cfg.p:
        lo, hi = cfg.brightness
        brightness = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if cfg.offset is not None and rng.random() < cfg.p:
        offset = float(rng.uniform(-cfg.offset, cfg.offset))
    if all(v is None for v in (remap, bias, blur, brightness, offset)):
        return None
    return AppearanceDraw(remap, bias, gain, blur, brightness, offset)


def _log_bias(coef: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """sum c_ij x^i y^j over i + j <= 3 on [-1, 1]^2, scaled to a largest magnitude of 1."""
    y = np.linspace(-1.0, 1.0, shape[0])[:, None]
    x = np.linspace(-1.0, 1.0, shape[1])[None, :]
    terms = [x**i * y**j for i in range(4) for j in range(4 - i)]
    field = sum(c * t for c, t in zip(coef, terms))
    top = float(np.abs(field).max())
    return field / top if top > 0 else field


def apply_appearance(sample: dict, draw: AppearanceDraw | None) -> dict:
    """Remap, shade and blur each channel in its own [min, max] range and restore its mean and std
    (the z-scored scale the network is given, as the gamma step does); then scale and shift it."""
    if draw is None:
        return sample
    from scipy.ndimage import gaussian_filter

    img = np.asarray(sample["image"], dtype=np.float32)
    out_ch = []
    for ch in img:
        lo, hi = float(ch.min()), float(ch.max())
        if hi <= lo:
            out_ch.append(ch)
            continue
        mean, std = float(ch.mean()), float(ch.std())
        x = (ch - lo) * (1.0 / (hi - lo))
        if draw.remap is not None:
            x = np.interp(x, np.linspace(0.0, 1.0, len(draw.remap)), draw.remap).astype(np.float32)
        if draw.bias is not None:
            x = x * np.exp(draw.bias_gain * _log_bias(draw.bias, x.shape)).astype(np.float32)
        if draw.blur is not None and draw.blur > 0:
            x = gaussian_filter(x, draw.blur, mode="nearest")
        xs = float(x.std())
        y = (x - float(x.mean())) * (std / xs if xs > 0 else 1.0) + mean
        if draw.brightness is not None:
            y = y * draw.brightness
        if draw.offset is not None:
            y = y + draw.offset * std
        out_ch.append(y)
    out = dict(sample)
    out["image"] = np.stack(out_ch).astype(np.float32)
    return out


@dataclass
class Augment:
    """``transform(sample, rng) -> sample``: spatial (plane-exact), appearance (when set), intensity.

    The random draws (``draw_plane``, ``draw_intensity``) are separate from their application, so
    ``augment.on: device`` (``augment_device``) draws exactly what this class draws and applies it
    to the whole batch on the training device."""

    image_size: int
    spatial: SpatialAugment | None = None
    intensity: IntensityAugment | None = None
    labels: bool = True  # False: drop "label" instead of resampling it (pretexts do not read it)
    appearance: AppearanceAugment | None = None

    @classmethod
    def from_config(cls, cfg: AugmentConfig | None, image_size: int, labels: bool = True) -> Augment:
        if cfg is None or not cfg.enabled:
            return cls(image_size, labels=labels)
        return cls(image_size, cfg.spatial, cfg.intensity, labels, cfg.appearance)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        """Spatial, then appearance, then intensity (noise last). The appearance draws come after the
        intensity draws, and only when configured, so a job without it draws what it always drew."""
        sample = self.spatial_step(sample, rng)
        draw = self.draw_intensity(rng)
        sample = apply_appearance(sample, draw_appearance(self.appearance, rng))
        return self.apply_intensity(sample, draw, rng)

    def draw_plane(self, sample: dict, rng: np.random.Generator) -> Plane | None:
        """The perturbed plane of the ``image_size`` output (rotation about the normal, zoom,
        in-plane shift), or None when the spatial augmentation is not drawn (the plain crop)."""
        s = self.spatial
        if s is None or s.p <= 0 or rng.random() >= s.p:
            return None
        angle = math.radians(rng.uniform(-s.rotation_deg, s.rotation_deg))
        lo, hi = s.scale
        scale = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        shift = tuple(rng.uniform(-s.translation_mm, s.translation_mm, size=2))
        plane = Plane.from_vector(sample["plane"])
        h, w = sample["image"].shape[-2:]
        return perturbed_plane(plane, (h, w), (self.image_size, self.image_size), angle, scale, shift)

    def spatial_step(self, sample: dict, rng: np.random.Generator) -> dict:
        dst = self.draw_plane(sample, rng)
        if dst is None:
            return crop_or_pad(sample, self.image_size, self.labels)
        size = (self.image_size, self.image_size)
        return _apply_plane(sample, Plane.from_vector(sample["plane"]), dst, size, self.labels)

    def draw_intensity(self, rng: np.random.Generator) -> IntensityDraw | None:
        """Gamma, contrast and noise std of one sample, or None when not drawn (in the order the
        loader path always drew them, so a seed gives the same augmentation as before)."""
        a = self.intensity
        if a is None or a.p <= 0 or rng.random() >= a.p:
            return None
        g = float(math.exp(rng.uniform(math.log(a.gamma[0]), math.log(a.gamma[1])))) if a.gamma is not None else None
        c = float(rng.uniform(*a.contrast)) if a.contrast is not None else None
        sd = float(rng.uniform(*a.noise_std)) if a.noise_std is not None and a.noise_std[1] > 0 else None
        return IntensityDraw(g, c, sd)

    @staticmethod
    def apply_intensity(sample: dict, draw: IntensityDraw | None, rng: np.random.Generator) -> dict:
        """Gamma (keeping mean and std), contrast, then noise drawn from ``rng``."""
        if draw is None:
            return sample
        img = np.asarray(sample["image"], dtype=np.float32).copy()
        if draw.gamma is not None:
            lo, hi = float(img.min()), float(img.max())
            if hi > lo:
                mean, std = float(img.mean()), float(img.std())
                x = (img - lo) * (1.0 / (hi - lo))
                np.power(x, draw.gamma, out=x)
                # keep the z-score scale the network was given (gamma changes mean and std)
                xs = float(x.std())
                img = (x - float(x.mean())) * (std / xs if xs > 0 else 1.0) + mean
        if draw.contrast is not None:
            m = float(img.mean())
            img = (img - m) * draw.contrast + m
        if draw.noise_std is not None:
            img = img + rng.standard_normal(img.shape, dtype=np.float32) * draw.noise_std
        out = dict(sample)
        out["image"] = img.astype(np.float32)
        return out


@dataclass
class SampleTransform:
    """What the DataLoader runs per sample: augmentation (or the plain crop) then the pretext target.

    Picklable, so it travels to DataLoader worker processes and Ray workers."""

    augment: Augment
    pretext: object | None = None
    train: bool = True

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if self.train:
            sample = self.augment(sample, rng)
        else:
            sample = crop_or_pad(sample, self.augment.image_size, self.augment.labels)
        if self.pretext is not None:
            sample = self.pretext.make_target(sample, rng)
        return sample
