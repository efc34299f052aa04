"""Augmentation of a whole batch on the training device: the loader draws, the GPU resamples.

``augment.on: device`` splits ``Augment`` in two. The loader worker still draws every random number
from the sample's generator, in the same order as the loader path, and computes the perturbed plane
and the pretext's target from it; but instead of resampling the stored image it ships that image
with the 2-D affine map ``Augment`` would have resampled it with (``warp``), the fill value
(``cval``) and the intensity draws (``intensity``). After the batch is on the device, one
``affine_grid`` + ``grid_sample`` over the batch replaces B per-sample resamplings on the CPU and the
intensity steps follow, batched.

Results equal the loader path's up to float32 rounding, except the Gaussian noise: it is drawn on the
device from a generator seeded by (seed, rank, step), so it is equal in distribution, not in value.
Only pretexts whose target comes from the slice geometry alone (``Pretext.target_reads_image`` False,
e.g. anatomical position) can run this way: their target is made before the image is resampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cardiossl.datasets.geometry import Plane

from ..config import AugmentConfig
from .augment import Augment, IntensityDraw, _src_coords, perturbed_plane

DEVICE_KEYS = ("warp", "cval", "intensity")


def uses_device_augment(job) -> bool:
    """Whether a training job augments on the device (``augment.on: device``, augmentation enabled)."""
    return bool(job.augment.enabled) and job.augment.on == "device"


def check_pretext(pretext) -> None:
    """``augment.on: device`` makes the target before the image is resampled: refuse a pretext whose
    target reads the image, naming it and the fix."""
    if getattr(pretext, "target_reads_image", True):
        raise ValueError(
            f"augment.on: device needs a pretext whose target comes from the slice geometry alone; "
            f"pretext {getattr(pretext, 'name', type(pretext).__name__)!r} reads the augmented image for its "
            "target. Use augment.on: loader with this pretext"
        )


def warp_theta(src: Plane, dst: Plane, in_shape: tuple[int, int], out_shape: tuple[int, int]) -> np.ndarray:
    """[2, 3] map from output to input coordinates normalised to [-1, 1] (``align_corners=True``):
    ``resample_to_plane``'s pixel map written for ``torch.nn.functional.affine_grid``."""
    m, o = _src_coords(src, dst)
    H, W = in_shape
    h, w = out_shape
    sx, sy = 2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)  # input pixel -> normalised
    tx, ty = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)  # output pixel -> normalised
    return np.array([
        [sx * m[1, 1] / tx, sx * m[1, 0] / ty, sx * (m[1, 0] / ty + m[1, 1] / tx + o[1]) - 1.0],
        [sy * m[0, 1] / tx, sy * m[0, 0] / ty, sy * (m[0, 0] / ty + m[0, 1] / tx + o[0]) - 1.0],
    ], dtype=np.float32)


@dataclass
class DeferredAugment:
    """The loader's half: ``Augment``'s draws, the new plane, and what the device needs to resample."""

    augment: Augment

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        size = self.augment.image_size
        image = np.asarray(sample["image"], dtype=np.float32)
        src = Plane.from_vector(sample["plane"])
        dst = self.augment.draw_plane(sample, rng)
        if dst is None:  # the plain centre crop (or the stored plane when the sizes agree)
            dst = src if image.shape[-2:] == (size, size) else perturbed_plane(src, image.shape[-2:], (size, size))
        draw = self.augment.draw_intensity(rng)
        out = {k: v for k, v in sample.items() if k != "label"}
        out["image"] = image
        out["plane"] = dst.to_vector()
        out["warp"] = warp_theta(src, dst, image.shape[-2:], (size, size))
        out["cval"] = image.reshape(image.shape[0], -1).min(axis=1)
        out["intensity"] = IntensityDraw.to_vector(draw)
        return out


@dataclass
class DeferredTransform:
    """What the DataLoader runs per sample with ``augment.on: device``: the draws, then the target.

    The pretext sees a stand-in image of the output size (its target reads the geometry only); the
    network input it would have copied is replaced by the stored image, resampled later."""

    deferred: DeferredAugment
    pretext: object

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sample = self.deferred(sample, rng)
        size = self.deferred.augment.image_size
        image = sample["image"]
        stand_in = dict(sample, image=np.broadcast_to(np.float32(0), (image.shape[0], size, size)))
        out = self.pretext.make_target(stand_in, rng)
        out["image"] = out["input"] = image
        return out


@dataclass
class DeviceAugment:
    """The device's half: ``(batch, generator) -> [B, C, size, size]`` float32 network input."""

    image_size: int
    noise: bool = True  # whether the config draws noise at all (decided here, not per batch: no sync)

    @classmethod
    def from_config(cls, cfg: AugmentConfig, image_size: int) -> DeviceAugment:
        a = cfg.intensity
        return cls(image_size, bool(a is not None and a.p > 0 and a.noise_std is not None and a.noise_std[1] > 0))

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        x = batch["input"].float()
        b, c = x.shape[:2]
        size = self.image_size
        theta = batch["warp"].to(device=x.device, dtype=torch.float32)
        cval = batch["cval"].to(device=x.device, dtype=torch.float32).reshape(b, c, 1, 1)
        grid = F.affine_grid(theta, [b, c, size, size], align_corners=True)
        out = F.grid_sample(x - cval, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + cval
        draws = batch["intensity"].to(device=x.device, dtype=torch.float32)
        return intensity_on_device(out.contiguous(), draws, generator if self.noise else None, self.noise)


def intensity_on_device(img: torch.Tensor, draws: torch.Tensor, generator: torch.Generator | None,
                        noise: bool = True) -> torch.Tensor:
    """``Augment.apply_intensity`` over a batch: gamma (keeping mean and std), contrast, noise; draws
    [B, 4] as ``IntensityDraw.to_vector`` writes them. No value is read back to the host."""
    on, gamma, contrast, sd = (draws[:, k].reshape(-1, 1, 1, 1) for k in range(4))
    dims = (1, 2, 3)
    lo, hi = img.amin(dim=dims, keepdim=True), img.amax(dim=dims, keepdim=True)
    mean, std = img.mean(dim=dims, keepdim=True), img.std(dim=dims, keepdim=True, correction=0)
    rng = hi - lo
    x = ((img - lo) / torch.where(rng > 0, rng, torch.ones_like(rng))).pow(gamma)
    xm, xs = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True, correction=0)
    g = (x - xm) * torch.where(xs > 0, std / torch.where(xs > 0, xs, torch.ones_like(xs)), torch.ones_like(xs)) + mean
    use_gamma = (on > 0) & (gamma != 1) & (rng > 0)
    img = torch.where(use_gamma, g, img)
    m = img.mean(dim=dims, keepdim=True)
    img = torch.where(on > 0, (img - m) * contrast + m, img)
    if noise:
        eps = torch.randn(img.shape, generator=generator, device=img.device, dtype=img.dtype)
        img = img + eps * torch.where(on > 0, sd, torch.zeros_like(sd))
    return img


def step_generator(device: torch.device, seed: int, rank: int, step: int) -> torch.Generator:
    """The noise generator of one training step: explicit, seeded from (seed, rank, step)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([int(seed), int(rank), int(step), 0xA06D]).generate_state(1)[0]))
    return g
