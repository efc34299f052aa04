"""The cardiossl NIfTI export: how ``cardiossl synth --format nifti`` writes subjects, and its reader.

This is the project's own folder format, shaped like a UK Biobank conversion so that NIfTI tools
open it, but it is not that layout (the real UK Biobank layout of Bai et al.'s ``ukbb_cardiac``
conversion is read by ``readers.ukbb``). What tells them apart is ``info.json`` (``"format":
"cardiossl-nifti"``; exports written before the rename say ``"cardiossl-ukbb"``) and the labels:
one 4-D file per view holding only the labelled frames. Layout name: ``cardiossl-nifti``.

One folder per subject::

    <id>/sa.nii.gz          SA cine, 4-D (x, y, slice, frame); slice 0 is the most basal
    <id>/la_2ch.nii.gz      LA cines, 4-D (x, y, 1, frame); likewise la_3ch, la_4ch
    <id>/label_sa.nii.gz    labels, 4-D (x, y, slice, k): one volume per labelled frame (ED, then ES)
    <id>/label_la_2ch.nii.gz ...
    <id>/info.json          format, ed_frame, es_frame, the labelled frames of each view, the subject meta

The 2-D image of slice k at frame t is ``data[:, :, k, t].T`` and its plane is
``Plane.from_nifti(affine, k)`` (RAS affine, converted to LPS there). Each label file also names its
frames in the header ``descrip`` (``cardiossl label frames=0,2``), so labels stay interpretable
without ``info.json``; without either, ED is frame 0 (the cine starts at the R wave). The reader
orders the SA stack base to apex by geometry (``stack_order``), like every reader.

Subjects are written to a hidden temporary folder and renamed into place, so a crash never leaves a
half-written subject that a reader would take for a whole one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..geometry import LPS_FROM_RAS, GeometryError, Plane
from ..records import LA_VIEWS, LABELS, RecordError, SliceRecord, SubjectRecord
from ..stack_order import order_stack
from . import READERS
from .base import LayoutReader, ReadError, SubjectSource
from .nifti_io import open_nifti

FORMAT = "cardiossl-nifti"
FORMATS = (FORMAT, "cardiossl-ukbb")  # the second: exports written before the layout was renamed
VERSION = 1
VIEW_FILES = {"sa": "sa.nii.gz", "2ch": "la_2ch.nii.gz", "3ch": "la_3ch.nii.gz", "4ch": "la_4ch.nii.gz"}
INFO_FILE = "info.json"
_DESCRIP = re.compile(r"frames=([0-9,]+)")
_LABELS_CONTIGUOUS = set(LABELS) == set(range(min(LABELS), max(LABELS) + 1))


def label_file(view: str) -> str:
    return "label_" + VIEW_FILES[view]


# ------------------------------------------------------------------------------------------------
# writer


def _stack_affine(planes: list[Plane], step_if_single: float) -> np.ndarray:
    """RAS affine of a regular stack of parallel planes (voxel i along a row, j down a column)."""
    p0 = planes[0]
    for k, p in enumerate(planes[1:], start=1):
        if not (
            np.allclose(p.row_dir, p0.row_dir, atol=1e-5)
            and np.allclose(p.col_dir, p0.col_dir, atol=1e-5)
            and np.allclose(p.spacing, p0.spacing, atol=1e-5)
        ):
            raise ValueError(f"slice {k} has a different orientation or pixel spacing from slice 0")
    if len(planes) > 1:
        step = planes[1].origin - p0.origin
        for k, p in enumerate(planes):
            if np.linalg.norm(p.origin - (p0.origin + k * step)) > 1e-3:
                raise ValueError(f"slice {k} is not equally spaced from its neighbours, as a NIfTI stack must be")
        if abs(step @ p0.normal) < 1e-6:
            raise ValueError("the slices of the stack lie in one plane")
    else:
        step = p0.normal * step_if_single
    lps = np.eye(4)
    lps[:3, 0] = p0.row_dir * p0.spacing[1]
    lps[:3, 1] = p0.col_dir * p0.spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = p0.origin
    ras = np.eye(4)
    ras[:3, :] = LPS_FROM_RAS @ lps[:3, :]
    return ras


def _save(data: np.ndarray, affine: np.ndarray, path: Path, descrip: str = "") -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)  # scanner coordinates
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if descrip:
        img.header["descrip"] = descrip.encode()[:79]
    nib.save(img, str(path))


def write_export_subject(record: SubjectRecord, folder: Path, *, overwrite: bool = False) -> Path:
    """Write one subject as ``folder/<id>/`` in the layout above; returns that folder.

    Needs an SA stack of equally spaced parallel slices and at most one slice per LA view, every
    slice at every frame. Raises FileExistsError when the subject is already there (unless
    ``overwrite``), ValueError when the record cannot be expressed in this layout.
    """
    record.validate()
    sid = record.subject_id
    folder = Path(folder)
    dest = folder / sid
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists; delete it or choose another output folder")
    by_view: dict[str, dict[tuple[int, int], SliceRecord]] = {}
    for s in record.slices:
        if s.view not in VIEW_FILES:
            raise ValueError(f"subject {sid}: view {s.view!r} has no file in the UK Biobank layout")
        by_view.setdefault(s.view, {})[(s.slice_index, s.frame)] = s
    if "sa" not in by_view:
        raise ValueError(f"subject {sid}: no SA slices; the layout needs sa.nii.gz")
    frames = sorted({s.frame for s in record.slices})
    if frames != list(range(len(frames))):
        raise ValueError(f"subject {sid}: frames {frames} are not 0..{len(frames) - 1}")
    ed = next((s.frame for s in record.slices if s.phase == "ed"), record.meta.get("ed_frame", 0))
    es = next((s.frame for s in record.slices if s.phase == "es"), record.meta.get("es_frame"))
    info = {
        "format": FORMAT,
        "version": VERSION,
        "subject_id": sid,
        "ed_frame": int(ed),
        "es_frame": None if es is None else int(es),
        "label_frames": {},
        "meta": record.meta,
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{sid}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for view, slices in by_view.items():
            where = f"subject {sid}, view {view}"
            indices = sorted({k for k, _ in slices})
            if indices != list(range(len(indices))):
                raise ValueError(f"{where}: slice indices {indices} are not 0..{len(indices) - 1}")
            if view != "sa" and len(indices) != 1:
                raise ValueError(f"{where}: {len(indices)} slices; LA files hold one")
            missing = [(k, t) for k in indices for t in frames if (k, t) not in slices]
            if missing:
                raise ValueError(f"{where}: slice/frame {missing[0]} is missing")
            first = [slices[(k, 0)] for k in indices]
            shape = first[0].image.shape
            if any(slices[key].image.shape != shape for key in slices):
                raise ValueError(f"{where}: images differ in shape")
            for (k, t), s in slices.items():
                if not np.array_equal(s.plane.to_vector(), first[k].plane.to_vector()):
                    raise ValueError(f"{where}, slice {k}: the plane changes between frames")
            thick_key = "sa_slice_thickness_mm" if view == "sa" else "la_slice_thickness_mm"
            try:
                affine = _stack_affine([s.plane for s in first], float(record.meta.get(thick_key, 1.0)))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            data = np.zeros((shape[1], shape[0], len(indices), len(frames)), dtype=np.float32)
            for (k, t), s in slices.items():
                data[:, :, k, t] = s.image.T
            if np.all(data == np.rint(data)) and data.min() >= -32768 and data.max() <= 32767:
                data = data.astype(np.int16)  # whole-number magnitudes, as scanners store them
            _save(data, affine, tmp / VIEW_FILES[view])
            label_frames = sorted({t for (k, t), s in slices.items() if s.label is not None})
            if label_frames:
                lab = np.zeros((shape[1], shape[0], len(indices), len(label_frames)), dtype=np.uint8)
                for j, t in enumerate(label_frames):
                    for k in indices:
                        s = slices[(k, t)]
                        if s.label is None:
                            raise ValueError(f"{where}: frame {t} is labelled on some slices only")
                        lab[:, :, k, j] = s.label.T
                descrip = "cardiossl label frames=" + ",".join(str(t) for t in label_frames)
                _save(lab, affine, tmp / label_file(view), descrip)
                info["label_frames"][view] = label_frames
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# ------------------------------------------------------------------------------------------------
# reader


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(4-D data, RAS affine, header descrip) of one NIfTI file, or ReadError naming the problem."""
    try:
        img = open_nifti(path)
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files (EOFError, zlib, ...)
        raise ReadError(
            f"{path}: cannot read this NIfTI file ({type(exc).__name__}: {exc}); it looks truncated or "
            "corrupt: copy or export it again"
        ) from None
    hdr = img.header
    sform, qform = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform == 0 and qform == 0:
        raise ReadError(
            f"{path}: no affine (sform_code and qform_code are both 0), so the slice positions in the "
            "scanner are unknown; write the file with its scanner affine (sform or qform)"
        )
    affine = np.asarray(img.get_sform() if sform > 0 else img.get_qform(), dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ReadError(f"{path}: degenerate affine (non-finite or singular); fix the file's sform/qform")
    if data.ndim == 2:
        data = data[:, :, None, None]
    elif data.ndim == 3:
        data = data[:, :, :, None]
    elif data.ndim != 4:
        raise ReadError(f"{path}: expected a 2-, 3- or 4-D image, got shape {data.shape}")
    descrip = bytes(hdr["descrip"]).split(b"\0", 1)[0].decode("ascii", "replace")
    return data, affine, descrip


def _affines_agree(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a[:3, :3], b[:3, :3], atol=1e-4) and np.allclose(a[:3, 3], b[:3, 3], atol=1e-2))


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is one subject of a cardiossl NIfTI export (its info.json says so)."""
    try:
        info = json.loads((Path(folder) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") in FORMATS


@READERS.register("cardiossl-nifti")
class NiftiExportReader(LayoutReader):
    """cardiossl NIfTI export folders: ``<id>/sa.nii.gz``, ``la_{2,3,4}ch.nii.gz``, ``label_*.nii.gz``,
    ``info.json``. Detected by ``info.json``; with ``--layout cardiossl-nifti`` every folder holding
    an ``sa.nii.gz`` is read."""

    name = "cardiossl-nifti"

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        if (root / VIEW_FILES["sa"]).is_file():
            return is_export(root)
        if not root.is_dir():
            return False
        first = next(root.glob(f"*/{VIEW_FILES['sa']}"), None)
        return first is not None and is_export(first.parent)

    def discover(self, root: Path) -> list[SubjectSource]:
        root = Path(root)
        if (root / VIEW_FILES["sa"]).is_file():  # a single subject folder
            return [SubjectSource(root.name, root.parent, (root,))]
        return [
            SubjectSource(d.name, root, (d,))
            for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and (d / VIEW_FILES["sa"]).is_file()
        ]

    def read(self, source: SubjectSource) -> SubjectRecord:
        folder = Path(source.paths[0]) if source.paths else Path(source.root) / source.subject_id
        sid = source.subject_id
        info: dict = {}
        info_path = folder / INFO_FILE
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text())
            except (OSError, ValueError) as exc:
                raise ReadError(f"{info_path}: not valid JSON ({exc}); fix or delete it") from None
        if not (folder / VIEW_FILES["sa"]).is_file():
            raise ReadError(f"{folder}: no {VIEW_FILES['sa']}; every subject of this layout needs an SA cine")
        ed = int(info.get("ed_frame", 0))
        es = info.get("es_frame")
        phases = {ed: "ed"}
        if es is not None:
            phases[int(es)] = "es"
        slices: list[SliceRecord] = []
        la_planes: list[Plane] = []
        stack = None
        for view in (*LA_VIEWS, "sa"):  # LA first: their planes help order the SA stack
            path = folder / VIEW_FILES[view]
            if not path.is_file():
                continue
            data, affine, _ = _load(path)
            # integer voxels (the usual int16) are finite by type; each slice is converted to float32
            # as it is cut out below, not the whole 4-D volume first
            if data.dtype.kind not in "iub":
                data = data.astype(np.float32, copy=False)
                if not np.all(np.isfinite(data)):
                    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
                    raise ReadError(f"{path}: {bad} NaN or Inf pixels; re-export the series")
            n_slices, n_frames = data.shape[2], data.shape[3]
            try:
                planes = [Plane.from_nifti(affine, k) for k in range(n_slices)]
            except GeometryError as exc:
                raise ReadError(f"{path}: unusable affine: {exc}") from None
            labels = self._labels(folder, view, data.shape, affine, info, n_frames, ed, es)
            order, pos = list(range(n_slices)), [float("nan")] * n_slices
            if view == "sa":
                stack = order_stack(planes, [data.shape[1::-1]] * n_slices, la_planes)
                order, pos = stack.order, stack.positions
            else:
                la_planes.append(planes[0])
            for i, k in enumerate(order):
                for t in range(n_frames):
                    lab = labels.get(t)
                    slices.append(
                        SliceRecord(
                            view=view,
                            slice_index=i,
                            frame=t,
                            image=np.ascontiguousarray(data[:, :, k, t].T, dtype=np.float32),
                            plane=planes[k],
                            label=None if lab is None else np.ascontiguousarray(lab[:, :, k].T),
                            phase=phases.get(t, ""),
                            stack_position=pos[i],
                        )
                    )
        meta = dict(info.get("meta") or {"source": str(folder), "ed_frame": ed, "es_frame": es})
        if stack is not None:
            meta.update(stack.meta())
        try:
            return SubjectRecord(sid, slices, meta).validate()
        except RecordError as exc:
            raise ReadError(f"{folder}: {exc}") from None

    def _labels(self, folder, view, shape, affine, info, n_frames, ed, es) -> dict[int, np.ndarray]:
        path = folder / label_file(view)
        if not path.is_file():
            return {}
        data, lab_affine, descrip = _load(path)
        if data.shape[:3] != tuple(shape[:3]):
            raise ReadError(
                f"{path}: label shape {data.shape[:3]} differs from its image {VIEW_FILES[view]} "
                f"{tuple(shape[:3])}; the label must be drawn on that image's grid"
            )
        if not _affines_agree(lab_affine, affine):
            raise ReadError(
                f"{path}: label affine differs from the affine of {VIEW_FILES[view]}; the label must share "
                "its image's geometry (re-save it with the image's affine)"
            )
        if data.dtype.kind in "iub":  # whole numbers by type; LABELS are 0..3: a min/max check, no sort
            in_range = data.size == 0 or (int(data.min()) >= min(LABELS) and int(data.max()) <= max(LABELS))
            if in_range and _LABELS_CONTIGUOUS:
                bad = []
            else:
                bad = sorted(set(np.unique(data).astype(int).tolist()) - set(LABELS))
        else:
            if not np.all(np.isfinite(data)) or np.any(data != np.rint(data)):
                raise ReadError(f"{path}: label values must be whole numbers")
            bad = sorted(set(np.unique(data).astype(int).tolist()) - set(LABELS))
        if bad:
            raise ReadError(f"{path}: label values {bad} are not in {LABELS}")
        n = data.shape[3]
        frames = (info.get("label_frames") or {}).get(view)
        if frames is None:
            m = _DESCRIP.search(descrip)
            if m:
                frames = [int(x) for x in m.group(1).split(",") if x]
            elif n == n_frames:
                frames = list(range(n_frames))
            elif n == 1:
                frames = [ed]
            elif n == 2 and es is not None:
                frames = [ed, int(es)]
        if frames is None or len(frames) != n or any(not 0 <= t < n_frames for t in frames):
            raise ReadError(
                f"{path}: {n} label volumes, but their frames are unknown or out of range ({frames}); "
                f"record them in {INFO_FILE} ('label_frames') or the header descrip ('frames=0,9')"
            )
        return {int(t): data[:, :, :, j].astype(np.uint8) for j, t in enumerate(frames)}
