"""Backbones and heads, each in a registry (`cardiossl plugins list` shows them).

Imports only ``cardiossl.registry`` (and torch); pretexts and the platform build on it.

Third-party packages add backbones through the entry-point group ``cardiossl.backbones`` and heads
through ``cardiossl.heads`` (a factory or class; the entry-point name is the registry name).
"""

from __future__ import annotations

from cardiossl.registry import Registry
from . import heads as _heads
from . import unet as _unet

BACKBONES: Registry = Registry("backbone", entry_point_group="cardiossl.backbones")
HEADS: Registry = Registry("head", entry_point_group="cardiossl.heads")

BACKBONES.add("unet", _unet.unet)
BACKBONES.add("unet_bai", _unet.unet_bai)
BACKBONES.add("unet_tiny", _unet.unet_tiny)
HEADS.add("segmentation", _heads.SegmentationHead)
HEADS.add("classification", _heads.ClassificationHead)
HEADS.add("reconstruction", _heads.ReconstructionHead)


def build_backbone(name: str, **params):
    """Instantiate a registered backbone; unknown names raise a RegistryError listing the known ones."""
    return BACKBONES.get(name)(**params)


def build_head(name: str, **params):
    """Instantiate a registered head, e.g. ``build_head("segmentation", in_ch=16, n_classes=4)``."""
    return HEADS.get(name)(**params)


__all__ = ["BACKBONES", "HEADS", "build_backbone", "build_head"]
