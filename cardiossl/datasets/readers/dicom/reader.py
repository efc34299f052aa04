"""The registered ``dicom`` layout: exam folders -> SubjectRecords (headers, views, pixels)."""

from __future__ import annotations

import itertools
import logging
import os
import re
from pathlib import Path

from ...records import SliceRecord, SubjectRecord
from .. import READERS
from ..base import LayoutReader, ReadError, SubjectSource
from .headers import DicomImage, dicom_files, is_dicom_file, iter_dicom_files, quiet_pydicom, read_header
from .pixels import read_pixels
from .views import _is_localizer, decide_views, group_planes

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# exam -> record
# ------------------------------------------------------------------------------------------------
def scan_exam(folder: Path) -> tuple[list[DicomImage], list[str]]:
    """Headers of every image below ``folder`` and notes on what was skipped."""
    images: list[DicomImage] = []
    notes: list[str] = []
    files = dicom_files(folder)
    if not files:
        raise ReadError(f"{folder}: no DICOM files found below this folder")
    for p in files:
        ims, note = read_header(p)
        images.extend(ims)
        if note:
            notes.append(note)
    if not images:
        raise ReadError(f"{folder}: no DICOM images with geometry found ({len(files)} DICOM objects, none an image)")
    return images, notes


def build_exam(subject_id: str, images: list[DicomImage], notes: list[str] | None = None,
               source: str = "") -> tuple[SubjectRecord, list[DicomImage]]:
    """Group, classify, read pixels: the record, and the source image of each of its slices."""
    notes = list(notes or [])
    warns: list[str] = []
    groups = group_planes(images)
    has_cine = any(g.n_frames >= 2 for g in groups)
    kept = []
    for g in groups:
        if _is_localizer(g, has_cine):
            notes.append(f"{g.name}: localizer/scout or single-phase image ({g.n_frames} image) skipped"
                         + (" (the exam has cine series)" if has_cine and g.n_frames < 2 else ""))
        else:
            kept.append(g)
    if not kept:
        raise ReadError(f"subject {subject_id}: no usable image series (only localizers or non-images)")
    fors = sorted({im.frame_of_reference for g in kept for im in g.images})
    if "" in fors:
        warns.append("some images have a blank FrameOfReferenceUID: planes are assumed to share the "
                     "exam's patient coordinate system")
    if len([f for f in fors if f]) > 1:
        warns.append(f"{len([f for f in fors if f])} different FrameOfReferenceUIDs: planes are read as "
                     "one patient coordinate system (anonymisers often rewrite this UID)")
    manufacturers = sorted({im.manufacturer for g in kept for im in g.images})
    if "" in manufacturers:
        warns.append("some images have a blank Manufacturer")
    decision = decide_views(kept)
    notes.extend(decision.skipped)
    for w in warns:
        log.warning("subject %s: %s", subject_id, w)

    slices: list[SliceRecord] = []
    sources: list[DicomImage] = []
    cache: dict = {}
    series_meta = []
    for g in decision.assigned:
        cine = g.n_frames >= 2 and all(im.trigger_time is not None for im in g.images)
        for frame, im in enumerate(g.images):
            slices.append(SliceRecord(
                view=g.view, slice_index=g.slice_index, frame=frame, image=read_pixels(im, cache),
                plane=im.plane, label=None, phase="ed" if (cine and frame == 0) else "",
                stack_position=g.stack_position if g.view == "sa" else float("nan"),
            ))
            sources.append(im)
        series_meta.append({
            "series_number": g.series_number, "description": g.description, "series_uid": g.series_uid,
            "view": g.view, "slice_index": g.slice_index, "frames": g.n_frames, "reason": g.reason,
            "plane": g.plane.to_dict(),
        })
    if not slices:
        raise ReadError(f"subject {subject_id}: no slices left after skipping: {'; '.join(notes)}")
    meta = {
        "layout": "dicom", "source": source, "series": series_meta, "skipped": notes, "warnings": warns,
        "manufacturer": next((m for m in manufacturers if m), ""), "ed_frame": 0, "es_frame": None,
        **decision.meta,
    }
    return SubjectRecord(subject_id, slices, meta), sources


def read_exam(subject_id: str, folder: Path) -> SubjectRecord:
    """Read one DICOM exam folder into a validated SubjectRecord (ReadError for bad input)."""
    images, notes = scan_exam(Path(folder))
    record, _ = build_exam(subject_id, images, notes, source=str(folder))
    return record


def sanitize_subject_id(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    s = re.sub(r"\.{2,}", ".", s)[:128]
    return s or "subject"


def _study_uid(folder: Path) -> str | None:
    for p in itertools.islice(iter_dicom_files(folder), 1):
        try:
            with quiet_pydicom():
                import pydicom

                return str(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["StudyInstanceUID"],
                                           force=True).get("StudyInstanceUID", "")) or None
        except Exception:  # an unreadable file is reported when the subject is read
            return None
    return None


def _has_dicom(folder: Path, limit: int = 200) -> bool:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            seen += 1
            if not fn.startswith(".") and is_dicom_file(Path(dirpath) / fn):
                return True
            if seen >= limit:
                return False
    return False


@READERS.register("dicom")
class DicomReader(LayoutReader):
    """One folder per subject holding a cardiac MR exam as DICOM files (any nesting below it).

    A root whose own files are DICOM is one subject; otherwise each sub-folder holding DICOM files is
    a subject, unless all of them belong to one study (one StudyInstanceUID), in which case the root
    is a single exam whose series happen to sit in sub-folders. Folder names become subject ids
    (characters outside letters, digits, '.', '_', '-' replaced by '_').
    """

    name = "dicom"

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        if not root.is_dir():
            return False
        return _has_dicom(root)

    def discover(self, root: Path) -> list[SubjectSource]:
        root = Path(root)
        if not root.is_dir():
            raise ReadError(f"{root}: not a folder")
        if any(p.is_file() and is_dicom_file(p) for p in root.iterdir() if not p.name.startswith(".")):
            return [SubjectSource(sanitize_subject_id(root.name), root, (root,))]
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_dicom(p))
        if len(subs) >= 2:
            studies = {_study_uid(p) for p in subs}
            if len(studies) == 1 and None not in studies:
                return [SubjectSource(sanitize_subject_id(root.name), root, (root,))]
        out = [SubjectSource(sanitize_subject_id(p.name), root, (p,)) for p in subs]
        return sorted(out, key=lambda s: s.subject_id)

    def read(self, source: SubjectSource) -> SubjectRecord:
        folder = Path(source.paths[0]) if source.paths else Path(source.root) / source.subject_id
        return read_exam(source.subject_id, folder).validate()
