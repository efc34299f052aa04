"""What ``cardiossl predict`` reads: short-axis cases in every layout ``ingest`` reads, one or many.

A case is one of:

* a NIfTI file, 3-D or 4-D (slice ``k`` is ``data[:, :, k].T``, as dcm2niix writes it);
* a cardiossl NIfTI export folder (``cardiossl synth --format nifti``): ``sa.nii.gz``, ED/ES frames
  from ``info.json`` (``readers.nifti_export``);
* a UK Biobank folder as Bai et al.'s ``ukbb_cardiac`` conversion leaves it (``readers.ukbb``): the
  cine ``sa.nii.gz`` (ED = frame 0, the R wave) with ``sa_ED.nii.gz``/``sa_ES.nii.gz`` found in it by
  their pixels, or the two single frames alone;
* an ACDC patient folder: ``patientXXX_frameNN.nii.gz`` with ED and ES numbered in ``Info.cfg``
  (Bernard et al., IEEE TMI 2018), or ``patientXXX_4d.nii.gz`` when the frame files are absent;
* an M&Ms-2 subject folder: ``NNN_SA_ED.nii.gz`` and ``NNN_SA_ES.nii.gz`` (Martin-Isla et al., IEEE
  JBHI 2023), else the cine ``NNN_SA_CINE.nii.gz``;
* a DICOM exam folder (the SA stack is found by ``readers.dicom``).

ED and ES given as two 3-D files become a two-frame input (frame 0 ED, frame 1 ES) that remembers
its files, so labels are written back beside each one with its own header. A folder that is none
of these is read as a cohort: its cases are found by the layout readers of ``ingest``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiossl.datasets.geometry import Plane

NIFTI = (".nii", ".nii.gz")
LAYOUTS = "a NIfTI file, a cardiossl NIfTI export or UK Biobank folder (sa.nii.gz, sa_ED/ES.nii.gz), an ACDC " \
          "patient folder (Info.cfg + patientXXX_frameNN.nii.gz), an M&Ms-2 subject folder (NNN_SA_ED/ES.nii.gz), " \
          "a DICOM exam folder, or a folder of such cases"


class PredictError(ValueError):
    """Input that cannot be segmented; the message names the file and the fix."""


@dataclass
class PhaseFile:
    """One frame of the input read from its own 3-D file (ACDC and M&Ms-2 ED/ES volumes)."""

    phase: str
    path: str
    affine: np.ndarray
    header: object


@dataclass
class SAInput:
    """A short-axis stack in source geometry: ``images[t][k]`` is slice k of frame t."""

    images: np.ndarray  # [T, S, rows, cols] float32
    planes: list[Plane]  # per slice k (the same for every frame)
    affine: np.ndarray  # NIfTI (RAS) affine of the volume the labels are written in
    kind: str  # "nifti" | "cardiossl-nifti" | "ukbb" | "acdc" | "mnms2" | "dicom"
    path: str
    ed_frame: int | None = None
    es_frame: int | None = None
    header: object | None = None  # nibabel header of a NIfTI input (copied to the output)
    is_4d: bool = True
    meta: dict = field(default_factory=dict)
    phase_files: list[PhaseFile] | None = None  # frame t came from phase_files[t] (separate ED/ES files)

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.images.shape[1])


def is_nifti(p: Path) -> bool:
    return p.name.endswith(NIFTI)


# ---------------------------------------------------------------------------------------------
# finding cases
# ---------------------------------------------------------------------------------------------
def case_kind(p: Path) -> str | None:
    """The layout of ONE case at ``p``, or None (not a case: maybe a folder of cases)."""
    from cardiossl.datasets.readers.nifti_export import is_export
    from cardiossl.datasets.readers.nifti_io import find_nifti

    if p.is_file():
        return "nifti" if is_nifti(p) else None
    if is_export(p):
        return "cardiossl-nifti"
    if find_nifti(p, "sa") or find_nifti(p, "sa_ED"):
        return "ukbb"
    if (p / "Info.cfg").is_file() and any(p.glob(f"{p.name}_frame*.nii*")) or find_nifti(p, f"{p.name}_4d"):
        return "acdc"
    if find_nifti(p, f"{p.name}_SA_ED") or find_nifti(p, f"{p.name}_SA_CINE"):
        return "mnms2"
    return None


def find_cases(path: str | os.PathLike) -> list[tuple[str, Path, str]]:
    """``[(case id, path, layout)]`` at ``path``: one case, or every case of a cohort folder."""
    from cardiossl.datasets.readers import READERS, ReadError

    p = Path(path)
    if not p.exists():
        raise PredictError(f"{p}: no such file or folder")
    kind = case_kind(p)
    if kind is not None:
        name = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem if p.is_file() else p.name
        return [(name, p, kind)]
    if p.is_file():
        raise PredictError(f"{p}: not a NIfTI file; expected {LAYOUTS}")
    for layout in ("cardiossl-nifti", "ukbb", "acdc", "mnms2", "dicom"):
        reader = READERS.get(layout)
        if reader.detect(p):
            try:
                sources = reader().discover(p)
            except ReadError as exc:
                raise PredictError(str(exc)) from None
            cases = [(s.subject_id, Path(s.paths[0]), layout) for s in sources]
            if cases:
                return cases
    files = sorted(f for f in p.iterdir() if f.is_file() and is_nifti(f))
    if files:
        return [(f.name.split(".nii")[0], f, "nifti") for f in files]
    raise PredictError(f"{p}: found no case; expected {LAYOUTS}")


def read_case(path: Path, kind: str) -> SAInput:
    readers = {"nifti": read_nifti_sa, "cardiossl-nifti": read_export_case, "ukbb": read_ukbb_case,
               "acdc": read_acdc_case, "mnms2": read_mnms2_case, "dicom": read_dicom_sa}
    return readers[kind](Path(path))


def read_sa_input(path: str | os.PathLike) -> SAInput:
    """One case at ``path`` (any layout above); a folder of several cases is an error here."""
    cases = find_cases(path)
    if len(cases) != 1:
        raise PredictError(f"{path} holds {len(cases)} cases ({', '.join(c[0] for c in cases[:5])} ...); "
                           "give one, or let `cardiossl predict` segment them all")
    return read_case(cases[0][1], cases[0][2])


# ---------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------
def _load(path: Path):
    import nibabel as nib

    from cardiossl.datasets.readers.base import ReadError
    from cardiossl.datasets.readers.nifti_io import load_nifti

    try:
        data, affine = load_nifti(path)
    except ReadError as exc:
        raise PredictError(str(exc)) from None
    return data, np.asarray(affine, dtype=np.float64), nib.load(str(path)).header


def read_nifti_sa(path: Path, kind: str = "nifti") -> SAInput:
    data, affine, header = _load(path)
    is_4d = data.ndim == 4 and data.shape[3] > 1
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise PredictError(f"{path}: expected a 3-D or 4-D SA stack, got shape {data.shape}")
    # [X, Y, Z, T] -> [T, Z, rows=Y, cols=X]
    images = np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0))).astype(np.float32)
    planes = [Plane.from_nifti(affine, k) for k in range(images.shape[1])]
    return SAInput(images, planes, affine, kind, str(path), ed_frame=0 if is_4d else None, header=header,
                   is_4d=is_4d)


def read_phase_files(files: dict[str, Path], kind: str, folder: Path) -> SAInput:
    """ED and ES as separate 3-D volumes on one grid -> frames 0 (ED) and 1 (ES)."""
    loaded = {ph: _load(p) for ph, p in files.items()}
    shapes = {ph: d.shape[:3] for ph, (d, _, _) in loaded.items()}
    if len(set(shapes.values())) != 1:
        raise PredictError(f"{folder}: ED and ES volumes differ in shape {shapes}; they must share one grid")
    (_, a0, _), (_, a1, _) = loaded["ed"], loaded["es"]
    if not np.allclose(a0, a1, atol=1e-3 * max(1.0, float(np.abs(a0).max()))):
        raise PredictError(f"{folder}: ED and ES volumes have different affines; they must share one grid")
    frames = []
    for ph in ("ed", "es"):
        d = loaded[ph][0]
        if d.ndim == 4:
            if d.shape[3] != 1:
                raise PredictError(f"{files[ph]}: a single frame was expected, got shape {d.shape}")
            d = d[..., 0]
        frames.append(np.transpose(d, (2, 1, 0)))
    images = np.ascontiguousarray(np.stack(frames)).astype(np.float32)
    planes = [Plane.from_nifti(a0, k) for k in range(images.shape[1])]
    phase_files = [PhaseFile(ph, str(files[ph]), loaded[ph][1], loaded[ph][2]) for ph in ("ed", "es")]
    return SAInput(images, planes, a0, kind, str(folder), ed_frame=0, es_frame=1, header=loaded["ed"][2],
                   is_4d=False, phase_files=phase_files)


def read_export_case(folder: Path) -> SAInput:
    from cardiossl.datasets.readers.nifti_io import find_nifti

    inp = read_nifti_sa(find_nifti(folder, "sa"), kind="cardiossl-nifti")
    inp.path = str(folder)
    info = folder / "info.json"  # readers.nifti_export: ED/ES frames
    if info.is_file():
        try:
            d = json.loads(info.read_text())
        except ValueError as exc:
            raise PredictError(f"{info}: not valid JSON ({exc})") from None
        if d.get("ed_frame") is not None:
            inp.ed_frame = int(d["ed_frame"])
        if d.get("es_frame") is not None:
            inp.es_frame = int(d["es_frame"])
    return inp


def read_ukbb_case(folder: Path) -> SAInput:
    """The ``ukbb_cardiac`` layout: the cine with its ED/ES frames located by their pixels (as the
    reader does), or the ED and ES single frames alone."""
    from cardiossl.datasets.readers.nifti_io import find_nifti, matching_frame

    cine, ed, es = (find_nifti(folder, stem) for stem in ("sa", "sa_ED", "sa_ES"))
    if cine is None:
        if ed is None or es is None:
            raise PredictError(f"{folder}: no sa.nii.gz, and not both sa_ED.nii.gz and sa_ES.nii.gz")
        return read_phase_files({"ed": ed, "es": es}, "ukbb", folder)
    inp = read_nifti_sa(cine, kind="ukbb")
    inp.path = str(folder)
    volume = np.transpose(inp.images, (3, 2, 1, 0))  # back to [X, Y, Z, T] to compare with the files
    for phase, path in (("ed", ed), ("es", es)):
        if path is not None:
            data = _load(path)[0]
            t = matching_frame(volume, data[..., 0] if data.ndim == 4 else data)
            if t is None:
                raise PredictError(f"{path}: matches no frame of {cine.name}; are they the same scan?")
            setattr(inp, f"{phase}_frame", t)
    return inp


def read_acdc_case(folder: Path) -> SAInput:
    from cardiossl.datasets.readers.acdc import parse_info_cfg
    from cardiossl.datasets.readers.base import ReadError
    from cardiossl.datasets.readers.nifti_io import find_nifti

    sid = folder.name
    try:
        cfg = parse_info_cfg(folder / "Info.cfg")
        ed, es = int(cfg["ED"]), int(cfg["ES"])
    except (ReadError, KeyError, ValueError):
        raise PredictError(f"{folder / 'Info.cfg'}: needs integer 'ED:' and 'ES:' lines (1-based frames)") from None
    files = {"ed": find_nifti(folder, f"{sid}_frame{ed:02d}"), "es": find_nifti(folder, f"{sid}_frame{es:02d}")}
    if all(files.values()):
        inp = read_phase_files(files, "acdc", folder)
    else:
        cine = find_nifti(folder, f"{sid}_4d")
        if cine is None:
            raise PredictError(f"{folder}: neither {sid}_frame{ed:02d}/{es:02d}.nii.gz nor {sid}_4d.nii.gz")
        inp = read_nifti_sa(cine, kind="acdc")
        inp.ed_frame, inp.es_frame = ed - 1, es - 1
    inp.meta.update({"group": cfg.get("Group", ""), "info_cfg": {"ED": ed, "ES": es}})
    return inp


def read_mnms2_case(folder: Path) -> SAInput:
    from cardiossl.datasets.readers.nifti_io import find_nifti

    sid = folder.name
    files = {"ed": find_nifti(folder, f"{sid}_SA_ED"), "es": find_nifti(folder, f"{sid}_SA_ES")}
    if all(files.values()):
        return read_phase_files(files, "mnms2", folder)
    cine = find_nifti(folder, f"{sid}_SA_CINE")
    if cine is None:
        raise PredictError(f"{folder}: neither {sid}_SA_ED + {sid}_SA_ES nor {sid}_SA_CINE (.nii.gz)")
    return read_nifti_sa(cine, kind="mnms2")  # the cine does not say which frame is ES: estimated


def stack_affine(planes: list[Plane]) -> np.ndarray:
    """NIfTI (RAS) affine of a stack whose slice k is ``data[:, :, k].T`` on ``planes[k]``."""
    p0 = planes[0]
    a = np.eye(4)
    a[:3, 0] = p0.row_dir * p0.spacing[1]
    a[:3, 1] = p0.col_dir * p0.spacing[0]
    if len(planes) > 1:
        step = (planes[-1].origin - p0.origin) / (len(planes) - 1)
        a[:3, 2] = step
    else:
        a[:3, 2] = p0.normal
    a[:3, 3] = p0.origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a  # LPS -> RAS


def read_dicom_sa(folder: Path) -> SAInput:
    from cardiossl.datasets.readers.base import ReadError
    from cardiossl.datasets.readers.dicom import read_exam, sanitize_subject_id

    try:
        rec = read_exam(sanitize_subject_id(folder.name), folder)
    except ReadError as exc:
        raise PredictError(f"{folder}: {exc}; expected {LAYOUTS}") from None
    sa = [s for s in rec.slices if s.view == "sa"]
    if not sa:
        raise PredictError(f"{folder}: no short-axis stack found in the DICOM exam")
    ks = sorted({s.slice_index for s in sa})
    ts = sorted({s.frame for s in sa})
    shapes = {s.image.shape for s in sa}
    if len(shapes) != 1:
        raise PredictError(f"{folder}: SA slices have different matrix sizes {sorted(shapes)}; cannot form one volume")
    by = {(s.slice_index, s.frame): s for s in sa}
    missing = [(k, t) for k in ks for t in ts if (k, t) not in by]
    if missing:
        raise PredictError(f"{folder}: SA stack incomplete, missing (slice, frame) {missing[:5]}")
    images = np.stack([np.stack([by[(k, t)].image for k in ks]) for t in ts]).astype(np.float32)
    planes = [by[(k, ts[0])].plane for k in ks]
    ed = rec.meta.get("ed_frame")
    es = rec.meta.get("es_frame")
    return SAInput(images, planes, stack_affine(planes), "dicom", str(folder),
                   ed_frame=None if ed is None else int(ed), es_frame=None if es is None else int(es),
                   is_4d=len(ts) > 1, meta={"subject_id": rec.subject_id})
