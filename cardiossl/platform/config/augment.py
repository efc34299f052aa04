"""``augment:`` section: intensity and spatial augmentation, applied before a pretext's target."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

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
        if v is not None and v[0] < 0:
            raise ValueError("noise std must be >= 0")
        return _range(v)


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
    spatial: SpatialAugment | None = Field(default_factory=SpatialAugment)
