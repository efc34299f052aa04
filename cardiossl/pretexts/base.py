"""The pretext contract: what every self-supervised task (built-in or third-party) provides.

A pretext turns a sample dict from ``CohortDataset`` into a network input and a target on the
CPU, inside the data loader, with the generator it is given (never the global RNG), so that a
run is reproducible from (seed, epoch, rank, index). It declares its head and computes its own
loss and metrics, so the training loop never branches on the task (MMPretrain's split of
backbone / head / target generator, with a typed config instead of ``type=`` dicts).

An instance is also a valid ``CohortDataset`` transform (``pretext(sample, rng)``) and its
``accepts`` is a valid ``CohortDataset`` filter, so slices a pretext cannot use are skipped and
counted when the index is built, never a crash mid-epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn


class PretextConfigError(ValueError):
    """A pretext config that does not validate; the message names the pretext and each bad field."""


class PretextConfig(BaseModel):
    """Base for pretext configs: unknown keys are refused so a typo fails before any worker starts."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TargetSpec:
    """What ``make_target`` promises for one key: shape, dtype and value range (inclusive; None = open)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    low: float | None = None
    high: float | None = None

    def check(self, key: str, value: Any) -> None:
        """Raise AssertionError naming the key when ``value`` breaks the promise."""
        arr = np.asarray(value)
        assert arr.shape == tuple(self.shape), f"{key}: shape {arr.shape}, declared {tuple(self.shape)}"
        assert arr.dtype == np.dtype(self.dtype), f"{key}: dtype {arr.dtype}, declared {np.dtype(self.dtype)}"
        if arr.dtype.kind == "f":
            assert np.all(np.isfinite(arr)), f"{key}: non-finite values"
        if arr.size and self.low is not None:
            assert arr.min() >= self.low, f"{key}: min {arr.min()} < declared low {self.low}"
        if arr.size and self.high is not None:
            assert arr.max() <= self.high, f"{key}: max {arr.max()} > declared high {self.high}"


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(config)"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        parts.append(f"{loc}: {e['msg']}{got}")
    return "; ".join(parts)


class Pretext(ABC):
    """Base class of every pretext task (the contract: docs/plugins.md); subclasses set ``name`` and ``Config``."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]] = PretextConfig
    target_reads_image: ClassVar[bool] = True
    """False when ``make_target`` reads only the slice geometry and copies the image into "input"
    unchanged: the image may then be augmented after the target is made (``augment.on: device``)."""

    def __init__(self, config: BaseModel | dict | None = None) -> None:
        cls = type(self)
        if config is None:
            config = {}
        if isinstance(config, cls.Config):
            self.config = config
        elif isinstance(config, dict):
            try:
                self.config = cls.Config.model_validate(config)
            except ValidationError as exc:
                raise PretextConfigError(
                    f"pretext {cls.name!r}: invalid config: {format_validation_error(exc)}. "
                    f"Fields: {', '.join(cls.Config.model_fields)}"
                ) from None
        else:
            raise PretextConfigError(
                f"pretext {cls.name!r}: config must be a dict or {cls.Config.__name__}, "
                f"got {type(config).__name__}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # configuration variants ------------------------------------------------------------------
    @classmethod
    def variants(cls) -> list[dict]:
        """Configs that together cover every mode of this pretext; the contract tests run each."""
        return [{}]

    # data side (CPU, in the loader) -----------------------------------------------------------
    def accepts(self, meta: dict) -> bool:
        """Whether a target can be made for this slice, from its metadata alone (no image read)."""
        return True

    def reason(self, meta: dict) -> str | None:
        """Why no target can be made for this slice (None when one can); ``cardiossl cohort info``
        counts slices by it. Override to say more than "not accepted"."""
        return None if self.accepts(meta) else "not accepted"

    @abstractmethod
    def make_target(self, sample: dict, rng: np.random.Generator) -> dict:
        """Return a copy of ``sample`` with "input" (float32 [C, H, W]) and "target" (+ "target_mask")."""

    @abstractmethod
    def target_spec(self, image_shape: tuple[int, int]) -> dict[str, TargetSpec]:
        """Shapes, dtypes and ranges of the keys ``make_target`` adds, for an image of (H, W)."""

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        """So an instance can be passed as ``CohortDataset(transform=pretext)``."""
        return self.make_target(sample, rng)

    # model side ---------------------------------------------------------------------------------
    @property
    def uses_decoder(self) -> bool:
        """Whether the head sits on the decoder (so the pretrained decoder is meaningful)."""
        return True

    @abstractmethod
    def build_head(self, backbone: nn.Module) -> nn.Module:
        """The head for this pretext on ``backbone`` (reads ``encoder.channels`` / ``decoder.out_channels``)."""

    def forward(self, backbone: nn.Module, head: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        feats = backbone.encoder(inputs)
        if self.uses_decoder:
            return head(backbone.decoder(feats))
        return head(feats[-1])

    @abstractmethod
    def loss(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms; "loss" is the total to backpropagate."""

    @abstractmethod
    def metrics(self, output: torch.Tensor, batch: dict) -> dict[str, float]:
        """Detached scalar metrics for logging."""

    # pictures ------------------------------------------------------------------------------------
    def draw(self, ax, sample: dict) -> None:
        """Draw the network input with the target over it on a matplotlib axis."""
        ax.imshow(np.asarray(sample.get("input", sample["image"]))[0], cmap="gray")

    def annotations(self, sample: dict) -> dict[str, np.ndarray]:
        """Fixed-shape arrays (besides the target) worth saving per slice by ``cardiossl show --npz``."""
        return {}


def overlay_classes(ax, classes, alpha: float = 0.4, n_colors: int = 10) -> None:
    """Draw integer classes over an image, class k in colour k - 1 of matplotlib's ``tab10`` (class 0,
    background, transparent). Targets and predictions drawn with it share one colour per class."""
    lab = np.asarray(classes)
    ax.imshow(np.ma.masked_equal(lab, 0), cmap="tab10", vmin=0.5, vmax=n_colors + 0.5, alpha=alpha,
              interpolation="nearest")


def sample_meta(sample: dict) -> dict:
    """The metadata view of a sample (what ``accepts`` and ``CohortDataset(filter=...)`` see)."""
    return {k: v for k, v in sample.items() if k not in ("image", "label", "input", "target", "target_mask")}


def image_hw(sample: dict) -> tuple[int, int]:
    img = np.asarray(sample["image"])
    if img.ndim != 3:
        raise ValueError(f"sample image must be [C, H, W], got shape {img.shape}")
    return int(img.shape[-2]), int(img.shape[-1])
