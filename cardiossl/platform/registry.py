"""Deprecated path: the registry moved to ``cardiossl.registry`` (kept for one release)."""

import warnings

from cardiossl.registry import Entry, Registry, RegistryError, describe

warnings.warn(
    "cardiossl.platform.registry moved to cardiossl.registry; this alias goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Entry", "Registry", "RegistryError", "describe"]
