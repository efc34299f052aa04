"""One random stream per component of a version-2 or later subject, never the global RNG.

A stream is ``np.random.default_rng([seed, index, version, crc32(component)])``: what one component
draws does not shift the draws of another, so changing (say) the appearance model leaves every
subject's anatomy and geometry as they were, and a subject is reproducible from (seed, index) alone.
"""

from __future__ import annotations

import zlib

import numpy as np

COMPONENTS = ("population", "anatomy", "torso", "site", "planning", "breath", "appearance", "texture", "noise",
              "contrast", "fat", "acceleration", "flow")


def stream(seed: int, index: int, component: str, version: int = 2) -> np.random.Generator:
    """The generator of ``component`` for subject ``index`` of cohort ``seed``."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown random component {component!r}; expected one of {COMPONENTS}")
    return np.random.default_rng([int(seed), int(index), int(version), zlib.crc32(component.encode())])
