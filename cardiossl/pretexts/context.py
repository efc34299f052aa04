"""Context pretexts: reconstruct what was hidden or shuffled, with the decoder.

``inpaint`` (Pathak et al., CVPR 2016, context encoders): random rectangles covering
``mask_fraction`` of the image are filled (0 = the mean of a z-scored image, or noise) and the
network reconstructs the original; the loss is the L2 error on the masked region (plus an optional
weight on the rest). The adversarial term of the paper is left out: for segmentation pretraining
the L2 term carries the structure (Pathak et al. report it alone already learns useful features).

``restore`` (Chen et al., MedIA 2019, context restoration): ``n_swaps`` random pairs of
non-overlapping ``patch_size`` patches are swapped, which keeps the intensity distribution but
breaks the anatomy; the network restores the original image, L2 loss over the whole image.

Metric: PSNR over the loss region, with the target's own intensity range as the peak.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from .base import Pretext, PretextConfig, TargetSpec, image_hw


class ContextConfig(PretextConfig):
    mode: Literal["inpaint", "restore"] = Field(
        "inpaint", description="inpaint: fill masked rectangles (Pathak 2016); restore: undo patch swaps (Chen 2019)")
    mask_fraction: float = Field(0.25, gt=0, le=0.9, description="inpaint: fraction of pixels masked")
    rect_min: float = Field(0.08, gt=0, le=1, description="inpaint: smallest rectangle side, fraction of image side")
    rect_max: float = Field(0.25, gt=0, le=1, description="inpaint: largest rectangle side, fraction of image side")
    max_rects: int = Field(64, ge=1, le=1024, description="inpaint: at most this many rectangles")
    fill: Literal["zero", "noise"] = Field("zero", description="inpaint: value of masked pixels")
    unmasked_weight: float = Field(0.0, ge=0, description="inpaint: weight of the L2 term outside the mask")
    patch_size: int = Field(10, ge=1, description="restore: side of swapped patches (pixels)")
    n_swaps: int = Field(10, ge=1, le=1000, description="restore: number of patch pairs swapped")

    @model_validator(mode="after")
    def _check(self):
        if self.rect_min > self.rect_max:
            raise ValueError(f"rect_min ({self.rect_min}) must not exceed rect_max ({self.rect_max})")
        return self


def inpaint_rects(shape, cfg: ContextConfig, rng: np.random.Generator, mask: np.ndarray | None = None):
    """Random rectangles (r0, r1, c0, c1), added until ``mask_fraction`` of the image is covered.

    All candidates are drawn at once (one generator call per quantity, so the draw does not
    depend on the image) and painted into ``mask`` (float32 [H, W], 1 = masked) in order.
    """
    h, w = shape
    if mask is None:
        mask = np.zeros(shape, dtype=np.float32)
    goal = cfg.mask_fraction * h * w
    lo_h, hi_h = max(1, round(cfg.rect_min * h)), max(1, round(cfg.rect_max * h))
    lo_w, hi_w = max(1, round(cfg.rect_min * w)), max(1, round(cfg.rect_max * w))
    n = cfg.max_rects
    # One generator call for every candidate: (height, width, top, left) from uniforms.
    u = rng.random((n, 4))
    rh = (lo_h + u[:, 0] * (hi_h - lo_h + 1)).astype(np.int64)
    rw = (lo_w + u[:, 1] * (hi_w - lo_w + 1)).astype(np.int64)
    r0 = (u[:, 2] * (h - rh + 1)).astype(np.int64)
    c0 = (u[:, 3] * (w - rw + 1)).astype(np.int64)
    cand = list(zip(r0.tolist(), (r0 + rh).tolist(), c0.tolist(), (c0 + rw).tolist()))
    # Paint the number of rectangles whose expected union stays below the goal (k random
    # rectangles of mean area A cover ~1 - (1 - A/S)^k), count once, then add one at a time.
    area = (lo_h + hi_h) * (lo_w + hi_w) / (4.0 * h * w)
    k0 = 0
    if area < 1.0:
        k0 = int(math.log1p(-min(cfg.mask_fraction, 0.999)) / math.log1p(-area) * 0.8)
    k0 = min(max(k0, 0), n)
    for a, b, c, d in cand[:k0]:
        mask[a:b, c:d] = 1.0
    rects = cand[:k0]
    covered = int(np.count_nonzero(mask)) if k0 else 0
    for a, b, c, d in cand[k0:]:
        if covered >= goal:
            break
        sub = mask[a:b, c:d]
        covered += sub.size - int(np.count_nonzero(sub))
        sub[...] = 1.0
        rects.append((a, b, c, d))
    return rects, mask


def inpaint_mask(shape, cfg: ContextConfig, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the rectangles of ``inpaint_rects``."""
    return inpaint_rects(shape, cfg, rng)[1].astype(bool)


def swap_patches(image: np.ndarray, cfg: ContextConfig, rng: np.random.Generator):
    """(image with ``n_swaps`` patch pairs swapped, float32 mask of the touched pixels); image is [C, H, W]."""
    out = image.copy()
    _, h, w = image.shape
    p = min(cfg.patch_size, h // 2, w // 2)
    mask = np.zeros((h, w), dtype=np.float32)
    if p < 1:
        return out, mask
    n, tries = cfg.n_swaps, 8
    # One generator call: column 0 is the patch, columns 1.. its candidate partners.
    pos = (rng.random((n, tries + 1, 2)) * np.array([h - p + 1, w - p + 1])).astype(np.int64)
    a, b = pos[:, 0], pos[:, 1:]
    # First candidate partner that does not overlap its patch; a pair with none is skipped.
    ok = (np.abs(b - a[:, None, :]) >= p).any(axis=2)
    partner = b[np.arange(n), ok.argmax(axis=1)].tolist()
    for (a0, a1), (b0, b1), valid in zip(a.tolist(), partner, ok.any(axis=1).tolist()):
        if not valid:
            continue
        pa = out[:, a0 : a0 + p, a1 : a1 + p].copy()
        out[:, a0 : a0 + p, a1 : a1 + p] = out[:, b0 : b0 + p, b1 : b1 + p]
        out[:, b0 : b0 + p, b1 : b1 + p] = pa
        mask[a0 : a0 + p, a1 : a1 + p] = 1.0
        mask[b0 : b0 + p, b1 : b1 + p] = 1.0
    return out, mask


def masked_mse(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where ``mask`` is 1 (mean over the whole batch's region)."""
    return ((output - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


class ContextPretext(Pretext):
    """Reconstruct masked rectangles (inpaint, Pathak 2016) or swapped patches (restore, Chen 2019)."""

    name: ClassVar[str] = "context"
    Config: ClassVar[type[ContextConfig]] = ContextConfig
    config: ContextConfig

    @classmethod
    def variants(cls) -> list[dict]:
        return [{"mode": "inpaint"}, {"mode": "inpaint", "fill": "noise", "unmasked_weight": 0.1}, {"mode": "restore"}]

    def target_spec(self, image_shape):
        h, w = image_shape
        return {
            "input": TargetSpec((1, h, w), np.dtype(np.float32)),
            "target": TargetSpec((1, h, w), np.dtype(np.float32)),
            "target_mask": TargetSpec((1, h, w), np.dtype(np.float32), 0.0, 1.0),
        }

    def make_target(self, sample: dict, rng: np.random.Generator) -> dict:
        image = np.asarray(sample["image"], dtype=np.float32)
        shape = image_hw(sample)
        out = dict(sample)
        if self.config.mode == "inpaint":
            mask = np.zeros((1,) + shape, dtype=np.float32)
            rects, _ = inpaint_rects(shape, self.config, rng, mask[0])
            x = image.copy()
            noise = self.config.fill == "noise"
            for r0, r1, c0, c1 in rects:
                if noise:
                    x[:, r0:r1, c0:c1] = rng.standard_normal((x.shape[0], r1 - r0, c1 - c0), dtype=np.float32)
                else:
                    x[:, r0:r1, c0:c1] = 0.0
        else:
            x, m = swap_patches(image, self.config, rng)
            mask = m[None]
        out["input"] = x
        out["target"] = image
        out["target_mask"] = mask
        return out

    def build_head(self, backbone: nn.Module) -> nn.Module:
        from ..backbones import HEADS

        return HEADS.get("reconstruction")(backbone.decoder.out_channels, 1)

    def _weights(self, batch: dict) -> torch.Tensor:
        mask = batch["target_mask"].float()
        if self.config.mode == "restore":
            return torch.ones_like(mask)
        return mask + self.config.unmasked_weight * (1.0 - mask)

    def loss(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["target"].to(output.dtype)
        mask = batch["target_mask"].to(output.dtype)
        if self.config.mode == "restore":
            return {"loss": torch.mean((output - target) ** 2)}
        masked = masked_mse(output, target, mask)
        terms = {"masked_mse": masked}
        total = masked
        if self.config.unmasked_weight > 0:
            rest = masked_mse(output, target, 1.0 - mask)
            terms["unmasked_mse"] = rest
            total = total + self.config.unmasked_weight * rest
        terms["loss"] = total
        return terms

    @torch.no_grad()
    def metrics(self, output: torch.Tensor, batch: dict) -> dict[str, float]:
        target = batch["target"].to(output.dtype)
        region = batch["target_mask"].to(output.dtype) if self.config.mode == "inpaint" else torch.ones_like(target)
        return {"psnr": psnr(output, target, region)}

    def draw(self, ax, sample: dict) -> None:
        x = np.asarray(sample.get("input", sample["image"]))[0]
        ax.imshow(x, cmap="gray", interpolation="nearest")
        if "target_mask" in sample:
            m = np.asarray(sample["target_mask"])[0]
            if m.any():
                ax.contour(m, levels=[0.5], colors="red" if self.config.mode == "inpaint" else "lime", linewidths=0.6)
            ax.set_xlabel(f"{self.config.mode}: {100 * m.mean():.0f}% of pixels", fontsize=7)


def psnr(output: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> float:
    """Mean over the batch of 10 log10(range^2 / MSE), MSE over ``region``, range = target max - min."""
    b = output.shape[0]
    err = ((output - target) ** 2 * region).reshape(b, -1).sum(1) / region.reshape(b, -1).sum(1).clamp_min(1.0)
    flat = target.reshape(b, -1)
    peak = (flat.max(1).values - flat.min(1).values).clamp_min(1e-6)
    return (10.0 * torch.log10(peak**2 / err.clamp_min(1e-12))).mean().item()
