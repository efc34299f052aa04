"""Deprecated path: model registry I/O moved to ``cardiossl.platform.tracking`` (kept for one release)."""

import warnings

from cardiossl.platform.tracking.models import (
    ARTIFACT_PATH,
    load_pretrained,
    register_pretrained,
    register_segmenter,
    resolve_model_dir,
)
from cardiossl.platform.tracking.weights import FORMAT_VERSION, ModelLoadError, load_pretrained_dir, save_pretrained

warnings.warn(
    "cardiossl.platform.models moved to cardiossl.platform.tracking; this alias goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "ARTIFACT_PATH", "FORMAT_VERSION", "ModelLoadError", "load_pretrained", "load_pretrained_dir",
    "register_pretrained", "register_segmenter", "resolve_model_dir", "save_pretrained",
]
