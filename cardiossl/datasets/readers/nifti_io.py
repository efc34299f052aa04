"""NIfTI loading shared by the NIfTI cohort readers: every failure becomes a ReadError naming the file.

A NIfTI file is only as good as its header: an image whose qform and sform codes are both 0 has no
scanner geometry (nibabel then invents one from the voxel sizes), and the anatomical-position pretext
(Bai et al., MICCAI 2019) would learn from planes that never existed. Such files are refused.

Voxel sizes: an sform whose columns are unit vectors while ``pixdim`` holds other voxel sizes
carries directions only (every ACDC file is written so: sform code 2, identity directions, 1 mm
columns, qform code 0, the real 1.37-1.92 mm x 5-10 mm spacing in ``pixdim``). Such an affine is
rescaled to ``pixdim`` and a note says so (``scanner_affine``); an sform that disagrees with
``pixdim`` in any other way is used as the NIfTI standard says (the sform wins) unless a qform that
agrees with ``pixdim`` is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry import GeometryError, Plane
from ..records import LABELS, SliceRecord
from .base import ReadError

AFFINE_ATOL_MM = 1e-3  # label and image affines must agree to a micrometre (same grid)


def open_nifti(path: Path):
    """The nibabel image of a NIfTI file; a gzipped one is inflated in one ``gzip.decompress`` call.

    nibabel reads ``.nii.gz`` through ``GzipFile``, which inflates in 8 KiB steps and copies each
    piece; one call inflates the same bytes with the same zlib (CRC and length checked, several gzip
    members joined) in about three quarters of the CPU time, and nibabel then parses header and
    pixels from memory exactly as from the file. The whole compressed file and its inflated bytes
    are held at once, as the pixel array is anyway. Errors propagate as nibabel's would (gzip, zlib,
    EOF, header errors): the callers turn them into a ReadError naming the file. Imported lazily:
    readers stay cheap to import for `cardiossl --help`.
    """
    import gzip

    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith(".gz"):
        return nib.load(str(path))
    raw = gzip.decompress(path.read_bytes())
    klass = nib.Nifti2Image if nib.Nifti2Header.may_contain_header(raw[:540]) else nib.Nifti1Image
    return klass.from_bytes(raw)


def find_nifti(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists (None when neither)."""
    for ext in (".nii.gz", ".nii"):
        p = Path(folder) / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _fits_zooms(affine: np.ndarray, zooms: np.ndarray, axes: int) -> bool:
    norms = np.linalg.norm(affine[:3, :axes], axis=0)
    return bool(np.allclose(norms, zooms[:axes], rtol=1e-3, atol=1e-4))


def scanner_affine(img, path: Path, notes: list[str] | None = None) -> np.ndarray:
    """The voxel-to-RAS affine of a loaded NIfTI image, reconciled with its ``pixdim`` voxel sizes.

    ReadError when the file has no geometry (both codes 0) or an sform that is neither consistent
    with ``pixdim`` nor a directions-only matrix; ``notes`` gets a line when ``pixdim`` was used.
    """
    hdr = img.header
    qcode = int(hdr["qform_code"]) if "qform_code" in hdr else 1
    scode = int(hdr["sform_code"]) if "sform_code" in hdr else 1
    if qcode == 0 and scode == 0:
        raise ReadError(
            f"{path}: no scanner geometry (qform_code and sform_code are both 0); re-export the "
            "file with its orientation (e.g. dcm2niix) so every slice keeps its plane"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if scode == 0 or "pixdim" not in hdr:
        return affine
    zooms = np.ones(3)
    z = np.asarray(hdr.get_zooms()[:3], dtype=np.float64)
    zooms[: z.size] = z
    axes = 3 if len(img.shape) >= 3 and img.shape[2] > 1 else 2  # a single slice has no step to check
    if not np.all(np.isfinite(affine)) or not np.all(zooms[:axes] > 0) or _fits_zooms(affine, zooms, axes):
        return affine
    if qcode > 0:
        q = np.asarray(hdr.get_qform(), dtype=np.float64)
        if _fits_zooms(q, zooms, axes):
            if notes is not None:
                notes.append(f"{Path(path).name}: sform voxel sizes disagree with pixdim; used the qform")
            return q
    lin = affine[:3, :3]
    if np.allclose(lin.T @ lin, np.eye(3), atol=1e-4):  # directions only, 1 mm columns
        fixed = affine.copy()
        fixed[:3, :3] = lin * zooms
        if notes is not None:
            notes.append(
                f"{Path(path).name}: sform has unit voxel sizes, pixdim gives "
                f"{' x '.join(f'{v:g}' for v in zooms[:axes])} mm: voxel sizes taken from pixdim"
            )
        return fixed
    return affine


def load_nifti(path: Path, *, labels: bool = False, notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(data, affine) of a NIfTI file; data float32 (uint8 for ``labels``), at least 3-D.

    Trailing singleton axes past the fourth are dropped, a 2-D file becomes one slice. ``notes``
    collects what ``scanner_affine`` had to reconcile.
    """
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path}: file not found")
    try:
        img = open_nifti(path)
        affine = scanner_affine(img, path, notes)
        if labels:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
    except ReadError:
        raise
    except Exception as exc:  # nibabel, gzip, zlib and OS errors all mean "this file is broken"
        raise ReadError(
            f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc}); the file is corrupt or "
            "truncated: copy or export it again"
        ) from exc
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ReadError(f"{path}: affine is not a finite 4x4 matrix")
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise ReadError(f"{path}: expected a 3-D or 4-D volume, got shape {data.shape}")
    if labels:
        if np.issubdtype(data.dtype, np.floating):
            if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
                raise ReadError(f"{path}: label volume holds non-integer values")
        if data.size and (data.min() < 0 or data.max() > 255):
            raise ReadError(f"{path}: label values outside 0..255")
        data = data.astype(np.uint8)
    return data, affine


def load_label(
    path: Path, image_shape: tuple[int, ...], image_affine: np.ndarray, lut: np.ndarray | None = None
) -> np.ndarray:
    """A label volume on its image's grid, remapped through ``lut`` (source value -> our LABELS)."""
    label, affine = load_nifti(path, labels=True)
    if label.shape[:3] != tuple(image_shape[:3]) or label.ndim != 3:
        raise ReadError(
            f"{path}: label shape {label.shape} differs from its image's shape {tuple(image_shape[:3])}; "
            "the label must be on the image grid"
        )
    scale = max(1.0, float(np.abs(image_affine[:3, 3]).max()))
    if not np.allclose(affine, image_affine, rtol=0.0, atol=AFFINE_ATOL_MM * scale):
        raise ReadError(
            f"{path}: label affine differs from its image's affine (max difference "
            f"{np.abs(affine - image_affine).max():.4g}); the label must be on the image grid"
        )
    if lut is not None:
        bad = np.unique(label[label >= len(lut)])
        if bad.size:
            raise ReadError(f"{path}: label values {bad.tolist()} have no meaning in this layout")
        label = lut[label]
    bad = sorted(set(np.unique(label).tolist()) - set(LABELS))
    if bad:
        raise ReadError(f"{path}: label values {bad} not in {sorted(LABELS)}")
    return label


def planes_of(path: Path, affine: np.ndarray, n_slices: int) -> list[Plane]:
    """The plane of every slice ``k`` (image ``data[:, :, k].T``) of a volume."""
    try:
        return [Plane.from_nifti(affine, k) for k in range(n_slices)]
    except GeometryError as exc:
        raise ReadError(f"{path}: affine gives no valid slice plane ({exc})") from exc


def volume_slices(
    volume: np.ndarray,
    planes: list[Plane],
    *,
    view: str,
    frame: int,
    phase: str = "",
    label: np.ndarray | None = None,
    order: list[int] | None = None,
    stack_positions: list[float] | None = None,
) -> list[SliceRecord]:
    """SliceRecords of one 3-D volume at one frame; ``order[i]`` is the file slice stored as index i."""
    n = volume.shape[2]
    order = list(range(n)) if order is None else order
    out = []
    for i, k in enumerate(order):
        out.append(
            SliceRecord(
                view=view,
                slice_index=i,
                frame=frame,
                image=np.ascontiguousarray(volume[:, :, k].T, dtype=np.float32),
                plane=planes[k],
                label=None if label is None else np.ascontiguousarray(label[:, :, k].T),
                phase=phase,
                stack_position=float("nan") if stack_positions is None else stack_positions[i],
            )
        )
    return out


def matching_frame(cine: np.ndarray, volume: np.ndarray, rel_tol: float = 0.01) -> int | None:
    """Index of the cine frame (last axis) equal to ``volume``, or None when no frame matches.

    Layouts that ship ED/ES volumes next to a cine without frame numbers (M&Ms-2) name their
    frames only through their pixels.
    """
    if cine.shape[:3] != volume.shape[:3]:
        return None
    diffs = np.abs(cine - volume[..., None]).reshape(-1, cine.shape[-1]).mean(axis=0)
    t = int(np.argmin(diffs))
    scale = float(np.abs(volume).mean()) or 1.0
    return t if diffs[t] <= rel_tol * scale else None
