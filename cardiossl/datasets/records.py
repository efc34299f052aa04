"""In-memory subject records: what every reader (synthetic, NIfTI, DICOM) hands to the store.

Images stay at their source resolution and keep their source plane; the store resamples them to
its training grid. One record per subject keeps a subject atomic: it lands whole or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .geometry import Plane

VIEWS: tuple[str, ...] = ("sa", "2ch", "3ch", "4ch", "rvot", "la")
"""View codes, in the order of their integer code in the store. ``la``: a long-axis view of unknown type."""
LA_VIEWS: tuple[str, ...] = ("2ch", "3ch", "4ch")
"""The long-axis views whose planes the anatomical-position pretext uses."""
PHASES: tuple[str, ...] = ("", "ed", "es")
"""Cardiac phase codes: "" for a cine frame that is neither end-diastole nor end-systole."""
LABELS: dict[int, str] = {0: "background", 1: "lv_cavity", 2: "lv_myocardium", 3: "rv_cavity"}

_SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


_LABEL_MAX = max(LABELS) if set(LABELS) == set(range(len(LABELS))) else None


def _bad_label_values(label: np.ndarray) -> list:
    """Label values outside LABELS, sorted ([] when sound).

    LABELS are 0..3, so an unsigned integer label map is sound iff its max is <= 3: one pass over
    the pixels instead of the sort behind np.unique (validation runs on every labelled slice twice,
    in the reader and in the store). Other dtypes take the np.unique path.
    """
    if _LABEL_MAX is not None and label.dtype.kind == "u" and (label.size == 0 or int(label.max()) <= _LABEL_MAX):
        return []
    return sorted(set(np.unique(label).tolist()) - set(LABELS))


class RecordError(ValueError):
    """A subject record that must not reach the store; the message names the subject and the fix."""


def check_subject_id(subject_id: str) -> str:
    """Subject ids become file and group names: refuse anything that could escape the store."""
    if (
        not isinstance(subject_id, str)
        or not _SUBJECT_ID.match(subject_id)
        or ".." in subject_id
    ):
        raise RecordError(
            f"invalid subject id {subject_id!r}: use 1-128 characters from letters, digits, '.', '_' "
            "and '-', starting with a letter or digit, without '..' or path separators"
        )
    return subject_id


@dataclass
class SliceRecord:
    """One 2-D image (one slice at one cine frame) with its plane."""

    view: str
    slice_index: int  # position in its stack (SA: 0 = most basal), 0 for single-slice views
    frame: int  # cine frame index
    image: np.ndarray  # (rows, cols) float32, source resolution
    plane: Plane
    label: np.ndarray | None = None  # (rows, cols) uint8 in LABELS, or None
    phase: str = ""  # "ed", "es" or ""
    stack_position: float = float("nan")  # SA: normalised base (0) to apex (1); NaN for LA views


def _all_finite(a: np.ndarray) -> bool:
    """``np.all(np.isfinite(a))`` in one pass without a boolean copy: a finite sum proves every pixel
    finite (a NaN or Inf makes the sum NaN or Inf); only a sum that is not finite (a bad pixel, or an
    overflow near the dtype's limit) is checked pixel by pixel."""
    if a.dtype.kind in "iub":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a, axis=None)
    return bool(np.isfinite(total)) or bool(np.all(np.isfinite(a)))


@dataclass
class SubjectRecord:
    subject_id: str
    slices: list[SliceRecord]
    meta: dict = field(default_factory=dict)  # JSON-able: source, layout, ed/es frames, group, ...

    def validate(self) -> SubjectRecord:
        """Raise RecordError naming the subject and the problem; return self when sound."""
        sid = check_subject_id(self.subject_id)
        if not self.slices:
            raise RecordError(f"subject {sid}: no slices")
        seen = set()
        for s in self.slices:
            where = f"subject {sid}, view {s.view}, slice {s.slice_index}, frame {s.frame}"
            if s.view not in VIEWS:
                raise RecordError(f"{where}: unknown view {s.view!r}; expected one of {VIEWS}")
            if s.phase not in PHASES:
                raise RecordError(f"{where}: unknown phase {s.phase!r}; expected one of {PHASES}")
            if s.image.ndim != 2 or min(s.image.shape) < 8:
                raise RecordError(f"{where}: image must be 2-D and at least 8x8, got {s.image.shape}")
            if not _all_finite(s.image):
                raise RecordError(f"{where}: image has NaN or Inf pixels")
            if s.label is not None:
                if s.label.shape != s.image.shape:
                    raise RecordError(
                        f"{where}: label shape {s.label.shape} differs from image shape {s.image.shape}"
                    )
                bad = _bad_label_values(s.label)
                if bad:
                    raise RecordError(f"{where}: label values {sorted(bad)} not in {sorted(LABELS)}")
            key = (s.view, s.slice_index, s.frame)
            if key in seen:
                raise RecordError(f"{where}: the same view/slice/frame appears twice")
            seen.add(key)
        return self
