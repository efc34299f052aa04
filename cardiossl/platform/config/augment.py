"""``augment:`` section: intensity, appearance and spatial augmentation, applied before a pretext's target."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel


def _range(v, lo_bound: float | None = None, name: str = "value"):
    if v is None:
        return v
    lo, hi = v
    if lo > hi:
        raise ValueError(f"range [{lo}, {hi}] is empty: the first value must be <= the second")
    if lo_bound is not None and lo <= lo_bound:
        raise ValueError(f"{name} must be > {lo_bound}")
    return v


def _nonneg_range(v, name: str):
    if v is not None and v[0] < 0:
        raise ValueError(f"{name} must be >= 0")
    return _range(v)


class IntensityAugment(StrictModel):
    p: float = Field(0.8, ge=0, le=1)
    gamma: tuple[float, float] | None = (0.7, 1.5)
    contrast: tuple[float, float] | None = (0.75, 1.25)
    noise_std: tuple[float, float] | None = (0.0, 0.1)

    @field_validator("gamma", "contrast")
    @classmethod
    def _pos(cls, v):
        return _range(v, 0.0, "factors")

    @field_validator("noise_std")
    @classmethod
    def _nonneg(cls, v):
        return _nonneg_range(v, "noise std")


class AppearanceAugment(StrictModel):
    """Label-free appearance randomisation for training on one cohort and testing on another.

    Each step is applied to a sample with probability ``p``, independently; ``null`` turns a step off.
    The steps stand in for what differs between scanners and sites (SynthSeg's domain randomisation,
    Billot et al. 2023, done on the stored image rather than from a label map)."""

    p: float = Field(0.5, ge=0, le=1, description="probability of each step, drawn independently")
    bias_field: float | None = Field(
        0.4, gt=0, le=2, description="largest log gain of a smooth multiplicative field, a degree-3 polynomial "
        "over the image (receive-coil shading, as MONAI's RandBiasField): 0.4 shades by 0.67-1.49x")
    remap_points: int | None = Field(
        6, ge=3, le=32, description="control points of a random monotone piecewise-linear intensity "
        "remap (vendor contrast; MONAI's RandHistogramShift)")
    blur_sigma_px: tuple[float, float] | None = Field(
        (0.3, 1.2), description="Gaussian blur sigma range in pixels (acquired resolution coarser than the grid)")
    brightness: tuple[float, float] | None = Field(
        (0.75, 1.33), description="factor range multiplying the normalised image about 0 (nnU-Net's "
        "brightness): another field of view, another z-score scale")
    offset: float | None = Field(
        0.5, gt=0, description="largest shift of the normalised image, in its standard deviations: a cohort "
        "whose field of view holds more or less dark background normalises to another mean")

    @field_validator("brightness")
    @classmethod
    def _brightness(cls, v):
        return _range(v, 0.0, "brightness factors")

    @field_validator("blur_sigma_px")
    @classmethod
    def _sigma(cls, v):
        return _nonneg_range(v, "blur sigma")


class SpatialAugment(StrictModel):
    p: float = Field(0.8, ge=0, le=1)
    rotation_deg: float = Field(15.0, ge=0, le=180)
    scale: tuple[float, float] = (0.9, 1.1)
    translation_mm: float = Field(8.0, ge=0)

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        return _range(v, 0.0, "scale factors")


class AugmentConfig(StrictModel):
    """Applied before the pretext's target, so geometric targets see the perturbed plane."""

    enabled: bool = True
    on: Literal["loader", "device"] = Field(
        "loader", description="loader: per sample in the DataLoader workers (CPU); device: the loader "
        "draws, then one batched grid_sample on the training device (GPU) resamples the batch after the "
        "copy (pretraining with a pretext whose target comes from geometry alone, e.g. position)",
    )
    intensity: IntensityAugment | None = Field(default_factory=IntensityAugment)
    appearance: AppearanceAugment | None = Field(
        None, description="off unless set: contrast remap, bias field, blur, z-score scale and shift (loader "
        "path only), for training on one cohort (e.g. synthetic) and testing on another")
    spatial: SpatialAugment | None = Field(default_factory=SpatialAugment)

    @model_validator(mode="after")
    def _device_path(self):
        if self.on == "device" and self.enabled and self.appearance is not None:
            raise ValueError("augment.appearance runs in the DataLoader only: set augment.on: loader, or "
                             "augment.appearance: null to augment on the device")
        return self
