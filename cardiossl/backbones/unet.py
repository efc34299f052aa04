"""2-D U-Net (Ronneberger et al., MICCAI 2015) with an explicit encoder / decoder split.

Self-supervised pretexts train either the encoder alone (rotation: a pooled bottleneck) or the
encoder and decoder (anatomical position, context restoration); few-shot fine-tuning then reuses
the parts that were pretrained. Keeping the two halves as separate modules makes "which weights
were pretrained" a question about module names, not about layer indices.

Presets: ``unet_bai`` follows the network of Bai et al. (JCMR 2018; MICCAI 2019): five scales
with 16, 32, 64, 128, 256 filters; ``unet_tiny`` is three scales of 4..16 filters for tests.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

Norm = Literal["batch", "instance", "group", "none"]


class UNetConfig(BaseModel):
    """Parameters of the U-Net family; unknown keys are refused so a typo fails before training."""

    model_config = ConfigDict(extra="forbid")

    in_channels: int = Field(1, ge=1, description="image channels (1 for cine MR magnitude)")
    depth: int = Field(5, ge=2, le=8, description="number of scales (encoder stages)")
    width: int = Field(16, ge=1, description="filters at the first scale; doubled at each scale")
    max_width: int = Field(512, ge=1, description="cap on the filters of the deeper scales")
    norm: Norm = Field("batch", description="normalisation after every convolution")
    convs_per_stage: int = Field(2, ge=1, le=4, description="3x3 convolutions per scale")

    def channels(self) -> list[int]:
        return [min(self.width * 2**k, self.max_width) for k in range(self.depth)]


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        # 8 groups where possible (Wu & He, ECCV 2018 use 32; our first stages may have 4-16 channels).
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected batch, instance, group or none")


class ConvBlock(nn.Sequential):
    """``convs`` x (3x3 conv, norm, ReLU)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, convs: int = 2) -> None:
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [
                nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=norm == "none"),
                make_norm(norm, out_ch),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class UNetEncoder(nn.Module):
    """Returns the feature map of every stage, highest resolution first; the last is the bottleneck."""

    def __init__(self, in_channels: int, channels: list[int], norm: str = "batch", convs: int = 2) -> None:
        super().__init__()
        self.channels = list(channels)
        self.stages = nn.ModuleList()
        prev = in_channels
        for k, ch in enumerate(channels):
            block = ConvBlock(prev, ch, norm, convs)
            self.stages.append(block if k == 0 else nn.Sequential(nn.MaxPool2d(2), block))
            prev = ch

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class UNetDecoder(nn.Module):
    """Consumes the encoder's per-stage features; returns the full-resolution map [B, out_channels, H, W]."""

    def __init__(self, encoder_channels: list[int], norm: str = "batch", convs: int = 2) -> None:
        super().__init__()
        ch = list(encoder_channels)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for k in range(len(ch) - 1, 0, -1):
            self.ups.append(nn.ConvTranspose2d(ch[k], ch[k - 1], 2, stride=2))
            self.blocks.append(ConvBlock(2 * ch[k - 1], ch[k - 1], norm, convs))
        self.out_channels = ch[0]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1])):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: pooling floored, so pad back
                dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
                x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            x = block(torch.cat([skip, x], dim=1))
        return x


class UNet(nn.Module):
    """``encoder(x) -> list[Tensor]``, ``decoder(feats) -> Tensor``; ``forward`` chains them."""

    def __init__(self, **params) -> None:
        super().__init__()
        try:
            cfg = UNetConfig(**params)
        except ValidationError as exc:
            raise ValueError(f"invalid U-Net parameters: {_short_errors(exc)}") from None
        self.config = cfg
        channels = cfg.channels()
        self.encoder = UNetEncoder(cfg.in_channels, channels, cfg.norm, cfg.convs_per_stage)
        self.decoder = UNetDecoder(channels, cfg.norm, cfg.convs_per_stage)

    @property
    def min_input_multiple(self) -> int:
        """Inputs whose sides are multiples of this avoid padding in the decoder."""
        return 2 ** (self.config.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _short_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg']}" for e in exc.errors()
    )


PRESETS: dict[str, dict] = {
    "unet_bai": {"depth": 5, "width": 16, "max_width": 256},  # 16, 32, 64, 128, 256
    "unet_tiny": {"depth": 3, "width": 4},  # 4, 8, 16
}


def unet(**params) -> UNet:
    """2-D U-Net; params: in_channels, depth, width, max_width, norm, convs_per_stage."""
    return UNet(**params)


def unet_bai(**overrides) -> UNet:
    """U-Net as in Bai et al. (2018, 2019): 5 scales, 16 to 256 filters, batch norm."""
    return UNet(**{**PRESETS["unet_bai"], **overrides})


def unet_tiny(**overrides) -> UNet:
    """3 scales of 4, 8, 16 filters: seconds per step on a CPU, for tests."""
    return UNet(**{**PRESETS["unet_tiny"], **overrides})


# What `cardiossl plugins show` lists for these factories (their params are UNetConfig's, with the
# presets as defaults); params are still checked by building the module, so job hashes are unchanged.
for _factory, _preset in ((unet, {}), (unet_bai, PRESETS["unet_bai"]), (unet_tiny, PRESETS["unet_tiny"])):
    _factory.params_model, _factory.param_defaults = UNetConfig, dict(_preset)
