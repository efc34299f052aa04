"""Segment a short-axis cine stack with a registered segmenter; labels back in the input geometry.

Input: a NIfTI SA stack (``sa.nii.gz``, 3-D [X, Y, Z] or 4-D [X, Y, Z, T]; slice ``k`` is the 2-D
image ``data[:, :, k].T`` as dcm2niix writes it) or a DICOM exam folder (the SA stack is found by
``readers.dicom``). Every slice is resampled onto the model's grid exactly as the cohort store does
at ingest (same directions, same centre, ``image_size`` pixels at the model's ``spacing_mm``) and
normalised with the same robust statistics of the subject's SA view (``store.intensity_stats``),
so the network sees what it saw in training. The predicted labels are resampled back onto each
source slice's own pixel grid with nearest neighbour, so the label volume has exactly the input's
shape and affine (NIfTI) or the affine of the DICOM stack.

Clinical measures (``evaluate.clinical_measures``: LV/RV EDV, ESV, EF, LV mass at 1.05 g/ml) are
computed from the labels in the input geometry when the ED and ES frames are known: given on the
command line, known to the reader (DICOM: ED = first frame), or, for ES, estimated as the frame with
the smallest predicted LV cavity volume, as in the UK Biobank pipeline of Bai et al. (JCMR 2018).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiossl.datasets.geometry import Plane

from ..tracking import ModelLoadError, load_segmenter_folder, resolve_model_dir
from .evaluate import clinical_measures, label_volumes_ml, slice_spacing_mm


class PredictError(ValueError):
    """Input that cannot be segmented; the message names the file and the fix."""


@dataclass
class SAInput:
    """A short-axis stack in source geometry: ``images[t][k]`` is slice k of frame t."""

    images: np.ndarray  # [T, S, rows, cols] float32
    planes: list[Plane]  # per slice k (the same for every frame)
    affine: np.ndarray  # NIfTI (RAS) affine of the volume the labels are written in
    kind: str  # "nifti" | "dicom"
    path: str
    ed_frame: int | None = None
    es_frame: int | None = None
    header: object | None = None  # nibabel header of a NIfTI input (copied to the output)
    is_4d: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.images.shape[1])


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _is_nifti(p: Path) -> bool:
    return p.name.endswith((".nii", ".nii.gz"))


def read_sa_input(path: str | os.PathLike) -> SAInput:
    """A NIfTI file, a folder holding ``sa.nii.gz``, or a DICOM exam folder."""
    p = Path(path)
    if not p.exists():
        raise PredictError(f"{p}: no such file or folder")
    if p.is_file():
        if not _is_nifti(p):
            raise PredictError(f"{p}: expected a NIfTI SA stack (.nii / .nii.gz) or a DICOM exam folder")
        return read_nifti_sa(p)
    for name in ("sa.nii.gz", "sa.nii"):
        if (p / name).is_file():
            inp = read_nifti_sa(p / name)
            info = p / "info.json"  # cardiossl NIfTI export (readers.nifti_export): ED/ES frames
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
    return read_dicom_sa(p)


def read_nifti_sa(path: Path) -> SAInput:
    import nibabel as nib

    from cardiossl.datasets.readers.base import ReadError
    from cardiossl.datasets.readers.nifti_io import load_nifti

    try:
        data, affine = load_nifti(path)
    except ReadError as exc:
        raise PredictError(str(exc)) from None
    header = nib.load(str(path)).header
    is_4d = data.ndim == 4 and data.shape[3] > 1
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise PredictError(f"{path}: expected a 3-D or 4-D SA stack, got shape {data.shape}")
    # [X, Y, Z, T] -> [T, Z, rows=Y, cols=X]
    images = np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0))).astype(np.float32)
    planes = [Plane.from_nifti(affine, k) for k in range(images.shape[1])]
    return SAInput(images, planes, np.asarray(affine, dtype=np.float64), "nifti", str(path),
                   ed_frame=0 if is_4d else None, header=header, is_4d=is_4d)


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
        raise PredictError(f"{folder}: {exc}") from None
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


# ---------------------------------------------------------------------------------------------
# grid <-> source
# ---------------------------------------------------------------------------------------------
def to_grid(image: np.ndarray, plane: Plane, image_size: int, spacing_mm: float, stats: dict):
    """(normalised grid image [S, S] float32, grid plane) as the store + CohortDataset produce it."""
    from cardiossl.datasets.resample import resample_slice

    g, _, plane_g = resample_slice(image, plane, image_size, spacing_mm)
    lo, hi, mean, std = stats["p0_5"], stats["p99_5"], stats["mean"], stats["std"]
    g = (np.clip(g, lo, hi) - mean) / std
    return g.astype(np.float32), plane_g


def label_to_source(label_g: np.ndarray, plane_g: Plane, plane: Plane, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of grid labels back onto a source slice's pixel grid (0 outside)."""
    from scipy import ndimage

    rr, cc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r, c, _ = plane_g.world_to_pixel(plane.pixel_to_world(rr, cc))
    return ndimage.map_coordinates(np.asarray(label_g, dtype=np.uint8), [r, c], order=0, mode="constant",
                                   cval=0, prefilter=False).astype(np.uint8)


def model_segmenter(model, *, batch_size: int = 16, device="cpu") -> Callable:
    """``fn(grid_images [N, S, S], grid_planes, frame) -> labels [N, S, S]`` from a segmenter module."""
    from .evaluate import predict_labels

    def fn(images: np.ndarray, planes: list[Plane], frame: int) -> np.ndarray:
        return predict_labels(model, images[:, None].astype(np.float32), batch_size=batch_size, device=device)

    return fn


def segment_input(inp: SAInput, segment: Callable, *, image_size: int, spacing_mm: float,
                  frames: list[int] | None = None) -> np.ndarray:
    """Labels [T, S, rows, cols] uint8 in source geometry (frames not in ``frames`` stay 0).

    ``segment(grid_images [S, G, G], grid_planes, frame) -> labels [S, G, G]`` segments one frame
    of the stack on the model grid (``model_segmenter`` wraps a network)."""
    from cardiossl.datasets.store import intensity_stats

    stats = intensity_stats(list(inp.images.reshape(-1, *inp.images.shape[2:])))
    frames = list(range(inp.n_frames)) if frames is None else frames
    out = np.zeros(inp.images.shape, dtype=np.uint8)
    shape = inp.images.shape[2:]
    for t in frames:
        grid = [to_grid(inp.images[t, k], inp.planes[k], image_size, spacing_mm, stats) for k in range(inp.n_slices)]
        labels_g = segment(np.stack([g for g, _ in grid]), [p for _, p in grid], t)
        for k, (_, plane_g) in enumerate(grid):
            out[t, k] = label_to_source(labels_g[k], plane_g, inp.planes[k], shape)
    return out


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
def source_spacing(inp: SAInput) -> list[tuple[float, float, float]]:
    """Per-slice (slice spacing, row spacing, column spacing) mm for volumes in source geometry."""
    gap = slice_spacing_mm(inp.planes) if inp.n_slices > 1 else float("nan")
    if inp.n_slices == 1:
        raise PredictError(f"{inp.path}: a single SA slice has no slice spacing; volumes need a stack")
    return [(gap, p.spacing[0], p.spacing[1]) for p in inp.planes]


def measures(inp: SAInput, labels: np.ndarray, ed: int | None, es: int | None | str) -> dict:
    """Per-frame volumes and, with ED and ES, the clinical measures."""
    sp = source_spacing(inp)
    per_frame = []
    for t in range(inp.n_frames):
        if labels[t].any():
            per_frame.append({"frame": t, **{f"{k}_ml": v for k, v in label_volumes_ml(labels[t], sp).items()}})
    es_source = "given"
    if es == "auto":
        if inp.n_frames < 2 or not per_frame:
            es = None
        else:
            es = int(min(per_frame, key=lambda r: r["lv_cavity_ml"] if r["frame"] != ed else np.inf)["frame"])
            es_source = "frame with the smallest predicted LV cavity volume"
    out = {"ed_frame": ed, "es_frame": es, "es_frame_source": es_source if es is not None else None,
           "frames": per_frame, "slice_spacing_mm": sp[0][0]}
    if ed is not None and es is not None:
        out.update(clinical_measures(labels[ed], labels[es], sp))
    return out


def write_labels(inp: SAInput, labels: np.ndarray, out_path: Path) -> Path:
    """NIfTI label volume [X, Y, Z(, T)] uint8 with the input's affine (and header for NIfTI)."""
    import nibabel as nib

    vol = np.transpose(labels, (3, 2, 1, 0))  # [T, Z, Y, X] -> [X, Y, Z, T]
    if not inp.is_4d:
        vol = vol[..., 0]
    if inp.header is not None:
        hdr = inp.header.copy()
        hdr.set_data_dtype(np.uint8)
        img = nib.Nifti1Image(vol.astype(np.uint8), inp.affine, hdr)
        img.set_qform(inp.affine, code=int(inp.header["qform_code"]) or 1)
        img.set_sform(inp.affine, code=int(inp.header["sform_code"]) or 1)
    else:
        img = nib.Nifti1Image(vol.astype(np.uint8), inp.affine)
        img.set_qform(inp.affine, code=1)
        img.set_sform(inp.affine, code=1)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(out_path))
    return out_path


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def load_segmenter(ref: str, tracking_uri: str | None = None):
    """(model, spec) from ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/segmenter``
    or a local folder written by ``tracking.save_segmenter``."""
    import tempfile

    if os.path.isdir(ref):
        return load_segmenter_folder(ref)
    if len(ref) == 32 and all(c in "0123456789abcdef" for c in ref):  # a bare run id
        ref = f"runs:/{ref}/segmenter"
    with tempfile.TemporaryDirectory(prefix="cardiossl-seg-") as tmp:
        try:
            d = resolve_model_dir(ref, tracking_uri, dst=tmp)
        except ModelLoadError as exc:
            raise PredictError(str(exc)) from None
        return load_segmenter_folder(d)


# ---------------------------------------------------------------------------------------------
# the whole command
# ---------------------------------------------------------------------------------------------
def predict(model_ref: str, input_path: str | os.PathLike, out: str | os.PathLike, *,
            tracking_uri: str | None = None, ed: int | None = None, es: int | str | None = "auto",
            frames: list[int] | None = None, device: str = "cpu", model=None, spec: dict | None = None) -> dict:
    """Segment ``input_path``; write ``OUT/labels.nii.gz`` and ``OUT/measures.json``; return the JSON."""
    import torch

    if model is None:
        model, spec = load_segmenter(model_ref, tracking_uri)
    model.to(device)
    inp = read_sa_input(input_path)
    ed = inp.ed_frame if ed is None else int(ed)
    if es is None or es == "auto":
        es = inp.es_frame if inp.es_frame is not None else ("auto" if inp.n_frames > 1 else None)
    for name, t in (("ed", ed), ("es", es)):
        if isinstance(t, int) and not 0 <= t < inp.n_frames:
            raise PredictError(f"--{name} {t}: the input has frames 0..{inp.n_frames - 1}")
    spacing = float(spec["spacing_mm"])
    if not np.isfinite(spacing):
        raise PredictError(f"{model_ref}: the segmenter's spec has no grid spacing (spacing_mm)")
    with torch.no_grad():
        labels = segment_input(inp, model_segmenter(model, device=device), image_size=int(spec["image_size"]),
                               spacing_mm=spacing, frames=frames)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    label_path = write_labels(inp, labels, out / "labels.nii.gz")
    result = {"input": str(input_path), "input_kind": inp.kind, "model": model_ref, "labels": str(label_path),
              "label_values": {"1": "lv_cavity", "2": "lv_myocardium", "3": "rv_cavity"},
              **measures(inp, labels, ed, es)}
    (out / "measures.json").write_text(json.dumps(result, indent=2, default=_json_default))
    return result


def _json_default(o):
    if isinstance(o, np.integer | np.floating):
        return o.item()
    raise TypeError(type(o).__name__)

