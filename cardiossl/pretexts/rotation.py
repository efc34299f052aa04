"""Rotation prediction (Gidaris, Singh & Komodakis, ICLR 2018).

The input is rotated by k * 90 degrees (k drawn from the loader's generator) and a classifier on the
pooled encoder bottleneck predicts k. Recognising the rotation requires recognising the heart's
usual orientation in the image, so the encoder learns anatomy without labels. Only the encoder is
trained: ``uses_decoder`` is False.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .base import Pretext, PretextConfig, TargetSpec, image_hw


class RotationConfig(PretextConfig):
    n_rotations: int = Field(4, ge=2, le=4, description="classes: rotations by 0, 90, ... degrees (first n)")


class RotationPretext(Pretext):
    """Predict the rotation (0/90/180/270 degrees) of the input from the pooled encoder (Gidaris 2018)."""

    name: ClassVar[str] = "rotation"
    Config: ClassVar[type[RotationConfig]] = RotationConfig
    config: RotationConfig

    @property
    def uses_decoder(self) -> bool:
        return False

    def accepts(self, meta: dict) -> bool:
        return True

    def target_spec(self, image_shape):
        h, w = image_shape
        return {
            "input": TargetSpec((1, h, w), np.dtype(np.float32)),
            "target": TargetSpec((), np.dtype(np.int64), 0, self.config.n_rotations - 1),
        }

    def make_target(self, sample: dict, rng: np.random.Generator) -> dict:
        h, w = image_hw(sample)
        if h != w:
            raise ValueError(
                f"rotation: image is {h}x{w}; 90-degree rotations need square images "
                "(the cohort store's grid is square: read samples through CohortDataset)"
            )
        k = int(rng.integers(self.config.n_rotations))
        out = dict(sample)
        # np.rot90 turns counter-clockwise as displayed (rows down, columns right).
        out["input"] = np.ascontiguousarray(np.rot90(np.asarray(sample["image"], dtype=np.float32), k, axes=(1, 2)))
        out["target"] = np.int64(k)
        return out

    def build_head(self, backbone: nn.Module) -> nn.Module:
        from ..backbones import HEADS

        return HEADS.get("classification")(backbone.encoder.channels[-1], self.config.n_rotations)

    def loss(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(output, batch["target"].long().reshape(-1))}

    @torch.no_grad()
    def metrics(self, output: torch.Tensor, batch: dict) -> dict[str, float]:
        target = batch["target"].long().reshape(-1)
        return {"accuracy": (output.argmax(1) == target).float().mean().item()}

    def draw(self, ax, sample: dict) -> None:
        ax.imshow(np.asarray(sample.get("input", sample["image"]))[0], cmap="gray", interpolation="nearest")
        if "target" in sample:
            ax.set_xlabel(f"rotated {90 * int(sample['target'])} deg", fontsize=7)
