"""Sunnybrook Cardiac Data layout: a DICOM short-axis cine with expert LV contours as labels.

Radau et al., "Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI", MIDAS Journal
2009 (Cardiac Atlas Project, CC0). One folder per subject::

    <subject>/dicoms/<N>.dcm
    <subject>/contours/i-contours/IM-0001-NNNN-icontour-manual.txt   LV endocardium
    <subject>/contours/o-contours/IM-0001-NNNN-ocontour-manual.txt   LV epicardium

A contour file holds one "x y" vertex per line in pixel coordinates, x = column and y = row, with pixel
centres at integers; ``IM-0001-NNNN`` belongs to ``dicoms/<int(NNNN)>.dcm``. Images, planes, slice
order and cine frames come from the DICOM reader (``dicom.build_exam``). Labels are rasterised where
*both* contours of an image exist: inside the endocardium -> 1 (LV cavity); inside the epicardium but
not the endocardium -> 2 (LV myocardium). The RV is never contoured in this data set, so 0 there means
"background or not annotated", and ``meta["label_classes"] = [1, 2]`` says which classes a loss may
trust. An image with only an endocardial contour (the end-systolic frames) is left unlabelled.

Phases: the contoured frames are end-diastole and end-systole. The frame with epicardial contours is
ED (Sunnybrook draws the epicardium at ED only; if several, the one with the larger mean cavity); the
other endocardium-only frame is ES. Every SA slice at those frames gets the phase.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..records import SubjectRecord
from . import READERS
from .base import LayoutReader, ReadError, SubjectSource
from .dicom import build_exam, sanitize_subject_id, scan_exam

_CONTOUR = re.compile(r"^IM-\d+-(\d+)-([io])contour-manual\.txt$", re.I)


def read_contour(path: Path) -> np.ndarray:
    """(n, 2) vertices as (row, column) from a Sunnybrook contour file of "x y" lines."""
    try:
        pts = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise ReadError(f"{path}: not a contour file of 'x y' lines ({e})") from e
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.all(np.isfinite(pts)):
        raise ReadError(f"{path}: a contour needs at least 3 finite 'x y' vertices, got shape {pts.shape}")
    return pts[:, ::-1].copy()  # (x=col, y=row) -> (row, col)


def rasterize(contour_rc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the closed polygon (row, col vertices)."""
    from matplotlib.path import Path as PolygonPath  # imported here: only this reader needs it

    mask = np.zeros(shape, dtype=bool)
    lo = np.clip(np.floor(contour_rc.min(axis=0)).astype(int), 0, None)
    hi = np.minimum(np.ceil(contour_rc.max(axis=0)).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return mask
    rr, cc = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]]  # only the bounding box: much faster
    pts = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.float64)
    inside = PolygonPath(contour_rc, closed=False).contains_points(pts)
    mask[lo[0] : hi[0], lo[1] : hi[1]] = inside.reshape(rr.shape)
    return mask


def contour_label(inner_rc: np.ndarray, outer_rc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 label: 1 inside the endocardium, 2 between endocardium and epicardium, 0 elsewhere."""
    label = np.zeros(shape, dtype=np.uint8)
    label[rasterize(outer_rc, shape)] = 2
    label[rasterize(inner_rc, shape)] = 1
    return label


def _contours(folder: Path) -> dict[int, dict[str, Path]]:
    out: dict[int, dict[str, Path]] = {}
    for sub in ("i-contours", "o-contours"):
        d = folder / "contours" / sub
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = _CONTOUR.match(p.name)
            if m:
                out.setdefault(int(m.group(1)), {})[m.group(2).lower()] = p
    return out


def _is_subject(folder: Path) -> bool:
    return (folder / "dicoms").is_dir() and (folder / "contours").is_dir()


def read_sunnybrook(subject_id: str, folder: Path) -> SubjectRecord:
    folder = Path(folder)
    images, notes = scan_exam(folder / "dicoms")
    record, sources = build_exam(subject_id, images, notes, source=str(folder))
    contours = _contours(folder)
    by_number: dict[int, int] = {}
    for i, im in enumerate(sources):
        if im.path.stem.isdigit():
            by_number[int(im.path.stem)] = i
    missing = sorted(set(contours) - set(by_number))
    if missing:
        raise ReadError(f"{folder}: contours for images {missing[:5]} whose dicoms/<N>.dcm is missing "
                        "or not part of the short-axis stack")
    ed_votes: Counter = Counter()
    es_votes: Counter = Counter()
    areas: dict[int, list[float]] = {}
    labelled = 0
    for number, files in sorted(contours.items()):
        s = record.slices[by_number[number]]
        if s.view != "sa":
            raise ReadError(f"{files[next(iter(files))]}: contour drawn on a {s.view} image, expected short axis")
        inner = read_contour(files["i"]) if "i" in files else None
        if inner is not None:
            areas.setdefault(s.frame, []).append(float(rasterize(inner, s.image.shape).sum()))
        if "i" in files and "o" in files:
            s.label = contour_label(inner, read_contour(files["o"]), s.image.shape)
            labelled += 1
            ed_votes[s.frame] += 1
        elif inner is not None:
            es_votes[s.frame] += 1
    ed = ed_votes.most_common(1)[0][0] if ed_votes else None
    es = None
    es_candidates = [f for f, _ in es_votes.most_common() if f != ed]
    if es_candidates:
        es = es_candidates[0]
        if ed is not None and np.mean(areas.get(es, [0])) > np.mean(areas.get(ed, [0])):
            ed, es = es, ed  # the larger cavity is end-diastole
    for s in record.slices:
        s.phase = "ed" if s.frame == ed else "es" if s.frame == es else ""
    record.meta.update({
        "layout": "sunnybrook", "label_classes": [1, 2], "labelled_slices": labelled,
        "ed_frame": ed, "es_frame": es,
        "label_note": "LV cavity (1) and myocardium (2) from expert contours; RV not annotated (0 = background "
                      "or unannotated)",
    })
    return record


@READERS.register("sunnybrook")
class SunnybrookReader(LayoutReader):
    """Sunnybrook Cardiac Data: ``<subject>/dicoms`` + ``<subject>/contours/{i,o}-contours``."""

    name = "sunnybrook"
    refines = ("dicom",)  # a Sunnybrook folder is DICOM plus contours: auto-detection prefers us

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        if not root.is_dir():
            return False
        return _is_subject(root) or any(p.is_dir() and _is_subject(p) for p in root.iterdir())

    def discover(self, root: Path) -> list[SubjectSource]:
        root = Path(root)
        if _is_subject(root):
            return [SubjectSource(sanitize_subject_id(root.name), root, (root,))]
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_subject(p))
        return sorted((SubjectSource(sanitize_subject_id(p.name), root, (p,)) for p in subs),
                      key=lambda s: s.subject_id)

    def read(self, source: SubjectSource) -> SubjectRecord:
        folder = Path(source.paths[0]) if source.paths else Path(source.root) / source.subject_id
        return read_sunnybrook(source.subject_id, folder).validate()
