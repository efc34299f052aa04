"""Task heads that sit on a backbone: on the decoder output or on the pooled bottleneck.

Heads stay small on purpose: a pretext should shape the shared encoder/decoder, not a head that is
thrown away after pretraining.
"""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Module):
    """1x1 convolution on the decoder output: per-pixel logits [B, n_classes, H, W]."""

    def __init__(self, in_ch: int, n_classes: int) -> None:
        super().__init__()
        if in_ch < 1 or n_classes < 1:
            raise ValueError(f"segmentation head needs in_ch >= 1 and n_classes >= 1, got {in_ch}, {n_classes}")
        self.conv = nn.Conv2d(in_ch, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ClassificationHead(nn.Module):
    """Global average pool of the bottleneck, then a linear layer: logits [B, n_classes].

    The pooled-feature classifier of Gidaris et al. (ICLR 2018); ``hidden`` adds one ReLU layer.
    """

    def __init__(self, in_ch: int, n_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        if in_ch < 1 or n_classes < 1:
            raise ValueError(f"classification head needs in_ch >= 1 and n_classes >= 1, got {in_ch}, {n_classes}")
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden:
            layers += [nn.Linear(in_ch, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_classes)]
        else:
            layers.append(nn.Linear(in_ch, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ReconstructionHead(nn.Module):
    """1x1 convolution on the decoder output to image channels [B, out_ch, H, W], linear output.

    Targets are z-scored intensities, so no squashing non-linearity.
    """

    def __init__(self, in_ch: int, out_ch: int = 1) -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"reconstruction head needs in_ch >= 1 and out_ch >= 1, got {in_ch}, {out_ch}")
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
