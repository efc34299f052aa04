"""Pretext tasks, each registered by name in PRETEXTS (``testing`` checks the plugin contract).

Imports only ``backbones``, ``datasets`` and ``registry``; the platform builds on it.

Third-party packages add pretexts through the entry-point group ``cardiossl.pretexts``
(``name = "module:PretextSubclass"``); they are loaded on the first lookup.
"""

from __future__ import annotations

from cardiossl.registry import Registry
from .base import Pretext, PretextConfig, PretextConfigError, TargetSpec

PRETEXTS: Registry[type[Pretext]] = Registry("pretext", entry_point_group="cardiossl.pretexts")

from .context import ContextPretext  # noqa: E402
from .position import PositionPretext  # noqa: E402
from .rotation import RotationPretext  # noqa: E402

PRETEXTS.add("position", PositionPretext)
PRETEXTS.add("rotation", RotationPretext)
PRETEXTS.add("context", ContextPretext)


def build_pretext(name: str, config: dict | None = None) -> Pretext:
    """``build_pretext("position", {"target": "lines"})``; unknown names list the registered ones."""
    return PRETEXTS.get(name)(config)


__all__ = ["PRETEXTS", "Pretext", "PretextConfig", "PretextConfigError", "TargetSpec", "build_pretext"]
