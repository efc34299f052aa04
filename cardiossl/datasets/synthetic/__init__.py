"""The embedded synthetic cine cohort: subjects sampled like exams, with their true geometry.

Four versions of the population exist; a subject is a function of (seed, index, version) only, so a
store written with any of them stays reproducible. ``meta["synth_version"]`` says which one made it.

* version 1 (``v1``): one idealised heart model; the SA stack is exactly perpendicular to the LV
  axis and every long-axis plane contains it. Kept unchanged, array for array.
* version 2 (``v2``, the default): ACDC-like disease groups in configurable proportions, richer
  anatomy, radiographer-planned geometry with its errors (tilted SA stack, offset long-axis planes,
  breath-hold misregistration), site and vendor appearance with artefacts. See ``v2`` and the
  modules it assembles (``population``, ``heart``, ``torso``, ``acquisition``, ``appearance``,
  ``render``).
* version 3 (``v3``): version 2's subjects, subject for subject (same anatomy, labels, geometry),
  with irregular epicardial fat, denser trabeculation and a wider image model (contrast, parallel-
  imaging SNR, coil shading, bSSFP bands, ghosts), calibrated so few-shot segmentation is as hard
  as on real cohorts.
* version 4 (``v4``): version 3's subjects with a wider in-plane pose, blood-pool signal variation
  and a darker, more trabeculated RV, each measured against real ACDC cases.

``synth_subject`` and ``synth_heart`` take ``version`` (default ``DEFAULT_VERSION``); ids, cine timing
and the cross-view label check are shared by all versions.
"""

from __future__ import annotations

from ..records import SubjectRecord
from . import v1, v2, v3, v4
from .v1 import (
    DEFAULT_N_FRAMES,
    contraction,
    es_frame_for,
    intersection_dice,
    subject_id_for,
    subject_index,
)

VERSIONS: tuple[int, ...] = (1, 2, 3, 4)
_LATER = {2: v2, 3: v3, 4: v4}
DEFAULT_VERSION = 2

__all__ = [
    "DEFAULT_N_FRAMES",
    "DEFAULT_VERSION",
    "VERSIONS",
    "check_population",
    "check_random_contrast",
    "check_version",
    "contraction",
    "es_frame_for",
    "intersection_dice",
    "subject_id_for",
    "subject_index",
    "synth_heart",
    "synth_subject",
]


def check_version(version) -> int:
    """The version as an int, or ValueError naming the versions there are."""
    try:
        v = int(version)
    except (TypeError, ValueError):
        v = None
    if v not in VERSIONS or isinstance(version, bool):
        raise ValueError(f"unknown synthetic cohort version {version!r}; choose one of {list(VERSIONS)}")
    return v


def check_population(population: dict | None, version: int = DEFAULT_VERSION) -> None:
    """ValueError naming the problem when ``population`` (group weights) does not suit ``version``."""
    if population is None:
        return
    if check_version(version) == 1:
        raise ValueError("version 1 has one population; group proportions need version 2 or later")
    from .population import normalise_population

    normalise_population(population)


def check_random_contrast(fraction, version: int = DEFAULT_VERSION) -> None:
    """ValueError naming the problem when ``fraction`` is not a share in [0, 1] ``version`` can draw."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"random contrast is the share of subjects with random tissue intensities, a number "
                         f"in [0, 1]; got {fraction!r}")
    if fraction > 0 and check_version(version) == 1:
        raise ValueError("version 1 has one appearance; random contrast needs version 2 or later")


def synth_heart(seed: int, index: int, *, version: int = DEFAULT_VERSION, population: dict | None = None):
    """The anatomy of subject ``index`` of cohort ``seed`` (the same draws as ``synth_subject``)."""
    version = check_version(version)
    check_population(population, version)
    if version == 1:
        return v1.synth_heart(seed, index)
    return _LATER[version].synth_heart(seed, index, population)


def synth_subject(
    subject_id: str,
    seed: int,
    *,
    n_frames: int = DEFAULT_N_FRAMES,
    index: int | None = None,
    n_sub: int = 5,
    version: int = DEFAULT_VERSION,
    population: dict | None = None,
    random_contrast: float = 0.0,
) -> SubjectRecord:
    """One synthetic subject: SA stack + 2ch/3ch/4ch LA cine slices, labels at ED and ES.

    Subject ``index`` (default: the id's trailing number, see ``subject_index``) of cohort ``seed``
    from population ``version``; ``n_sub`` (odd) sub-planes are averaged across each slab. The
    version's module documents its draws and its ``meta``; every version records
    ``meta["synth_version"]``. ``population`` (version 2 on) sets the group proportions.
    ``random_contrast`` (version 2 on, 0-1): the share of subjects drawn with SynthSeg-style random
    tissue intensities (``appearance``), for training segmenters meant for other scanners.
    """
    version = check_version(version)
    check_population(population, version)
    check_random_contrast(random_contrast, version)
    if version == 1:
        record = v1.synth_subject(subject_id, seed, n_frames=n_frames, index=index, n_sub=n_sub)
        record.meta["synth_version"] = 1
        return record
    if n_sub < 1 or n_sub % 2 == 0:
        raise ValueError(f"n_sub must be a positive odd number, got {n_sub}")
    es_frame_for(n_frames)  # refuses fewer than 2 frames
    idx = subject_index(subject_id) if index is None else int(index)
    return _LATER[version].synth_subject(subject_id, seed, idx, n_frames=n_frames, n_sub=n_sub,
                                         population=population, random_contrast=random_contrast)
