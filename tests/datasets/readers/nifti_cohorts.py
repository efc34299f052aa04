"""Tiny hand-built NIfTI cohorts (ACDC and M&Ms-2 layouts) with known oblique planes.

Every volume is written from a plane we choose (LPS origin, row/column directions, non-square
pixels, slice step), so a test can check the stored planes against geometry it knows, not against
whatever nibabel reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cardiossl.datasets.readers.acdc import AcdcReader

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class KnownGeometry:
    """A stack of planes: pixel (r, c) of slice k is at origin + c*sc*row + r*sr*col + k*step*normal."""

    origin: np.ndarray  # LPS mm
    row_dir: np.ndarray  # column index grows along it
    col_dir: np.ndarray  # row index grows along it
    row_spacing: float  # between rows (DICOM PixelSpacing[0])
    col_spacing: float  # between columns (DICOM PixelSpacing[1])
    step: float  # between slices, along row_dir x col_dir

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def world(self, r: float, c: float, k: float) -> np.ndarray:
        return (
            self.origin
            + c * self.col_spacing * self.row_dir
            + r * self.row_spacing * self.col_dir
            + k * self.step * self.normal
        )

    def affine(self) -> np.ndarray:
        """The RAS NIfTI affine whose voxel (i, j, k) is pixel (r=j, c=i) of slice k."""
        a = np.eye(4)
        a[:3, 0] = self.row_dir * self.col_spacing
        a[:3, 1] = self.col_dir * self.row_spacing
        a[:3, 2] = self.normal * self.step
        a[:3, 3] = self.origin
        return RAS_FROM_LPS @ a


def oblique(origin=(12.0, -30.5, 80.25), angles=(25.0, -40.0, 15.0), row_spacing=1.8,
            col_spacing=1.3, step=8.0) -> KnownGeometry:
    r = rotation(*angles)
    return KnownGeometry(np.asarray(origin, float), r[:, 0], r[:, 1], row_spacing, col_spacing, step)


APEX_LPS = np.array([0.62, -0.55, -0.56]) / np.linalg.norm([0.62, -0.55, -0.56])  # left, anterior, inferior


def short_axis(origin=(12.0, -30.5, 80.25), *, twist: float = 25.0, row_spacing=1.8, col_spacing=1.3,
               step=8.0, apex_first: bool = False) -> KnownGeometry:
    """An oblique SA stack as a scanner plans it: slices perpendicular to the LV long axis (which
    points left, anterior and inferior), slice index growing towards the apex, or towards the base
    with ``apex_first``; ``twist`` rotates the image axes in the plane."""
    w = APEX_LPS if not apex_first else -APEX_LPS
    a = np.cross(w, [0.0, 0.0, 1.0])
    a /= np.linalg.norm(a)
    b = np.cross(w, a)
    t = np.deg2rad(twist)
    row = np.cos(t) * a + np.sin(t) * b
    col = np.cross(w, row)  # so that row x col = w
    return KnownGeometry(np.asarray(origin, float), row, col, row_spacing, col_spacing, step)


def long_axis_plane(sa: KnownGeometry, angle: float = 0.0, origin=(-60.0, 40.0, 110.0), row_spacing=1.4,
                    col_spacing=1.15) -> KnownGeometry:
    """A single long-axis plane containing the SA stack's normal (the LV long axis), turned
    ``angle`` degrees about it from the SA row direction."""
    t = np.deg2rad(angle)
    d = np.cos(t) * sa.row_dir + np.sin(t) * sa.col_dir
    n = sa.normal / np.linalg.norm(sa.normal)
    return KnownGeometry(np.asarray(origin, float), d, -n, row_spacing, col_spacing, 7.0)


def heart(shape: tuple[int, int, int], scale: float, rng: np.random.Generator,
          base_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(image int16, labels in OUR convention 1 LV, 2 MYO, 3 RV) of a cone-shaped toy ventricle.

    ``scale`` < 1 shrinks the cavities (systole). Slice 0 is the base unless ``base_first`` is False.
    """
    nx, ny, nz = shape
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    cx, cy = nx / 2.0, ny / 2.0
    lab = np.zeros(shape, np.uint8)
    for k in range(nz):
        taper = 1.0 - 0.8 * k / max(1, nz - 1)  # base wide, apex narrow
        d = np.hypot(x - cx, y - cy)
        r_cav = 0.28 * min(nx, ny) * taper * scale
        r_epi = r_cav + 2.5
        lab[..., k][d <= r_epi] = 2
        lab[..., k][d <= r_cav] = 1
        if k < nz - 1:
            drv = np.hypot(x - (cx - r_epi - 2.0), y - cy)
            lab[..., k][(drv <= 0.6 * r_epi * taper + 1) & (d > r_epi)] = 3
    img = np.where(lab == 1, 800, np.where(lab == 2, 200, np.where(lab == 3, 700, 100))).astype(float)
    img += rng.normal(0, 20, shape)
    img = np.clip(img, 0, 2000).astype(np.int16)
    if not base_first:
        img, lab = img[:, :, ::-1].copy(), lab[:, :, ::-1].copy()
    return img, lab


def save(data: np.ndarray, affine: np.ndarray, path: Path, *, geometry: bool = True) -> Path:
    img = nib.Nifti1Image(data, affine)
    if geometry:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    else:
        img.set_qform(None, code=0)
        img.set_sform(None, code=0)
    nib.save(img, str(path))
    return path


OURS_TO_ACDC = np.array([0, 3, 2, 1], np.uint8)  # ours 1 LV, 2 MYO, 3 RV -> ACDC 3 LV, 2 MYO, 1 RV


def write_acdc_patient(root: Path, number: int, geom: KnownGeometry, *, shape=(24, 20, 5),
                       n_frames: int = 4, ed: int = 1, es: int = 3, cine: bool = True,
                       seed: int = 0) -> dict:
    """One ACDC patient folder; returns the truth (volumes per 1-based frame, labels ours)."""
    rng = np.random.default_rng(seed)
    sid = f"patient{number:03d}"
    folder = Path(root) / sid
    folder.mkdir(parents=True)
    affine = geom.affine()
    frames, labels = {}, {}
    for n in range(1, n_frames + 1):
        scale = 1.0 - 0.35 * np.sin(np.pi * (n - ed) / max(1, n_frames)) ** 2
        frames[n], labels[n] = heart(shape, scale, rng)
    (folder / "Info.cfg").write_text(
        f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 172.0\nNbFrame: {n_frames}\nWeight: 70.5\n"
    )
    for n in (ed, es):
        save(frames[n], affine, folder / f"{sid}_frame{n:02d}.nii.gz")
        save(OURS_TO_ACDC[labels[n]], affine, folder / f"{sid}_frame{n:02d}_gt.nii.gz")
    if cine:
        save(np.stack([frames[n] for n in range(1, n_frames + 1)], axis=-1), affine,
             folder / f"{sid}_4d.nii.gz")
    return {"id": sid, "folder": folder, "frames": frames, "labels": labels, "ed": ed, "es": es,
            "geom": geom, "shape": shape}


def write_mnms2_subject(root: Path, number: int, sa: KnownGeometry, la: KnownGeometry, *,
                        shape=(22, 26, 6), la_shape=(30, 24), n_frames: int = 5, ed: int = 1,
                        es: int = 3, cine: bool = True, labels: bool = True, apex_first: bool = False,
                        seed: int = 0) -> dict:
    """One M&Ms-2 subject folder (SA stack + one 4-chamber LA slice); returns the truth (0-based frames)."""
    rng = np.random.default_rng(seed)
    sid = f"{number:03d}"
    folder = Path(root) / sid
    folder.mkdir(parents=True)
    sa_frames, sa_labels, la_frames, la_labels = [], [], [], []
    for t in range(n_frames):
        scale = 1.0 - 0.35 * np.sin(np.pi * (t - ed) / n_frames) ** 2
        img, lab = heart(shape, scale, rng, base_first=not apex_first)
        sa_frames.append(img)
        sa_labels.append(lab)
        img2, lab2 = heart((*la_shape, 3), scale, rng)
        la_frames.append(img2[:, :, :1].copy())
        la_labels.append(lab2[:, :, :1].copy())
    for view, frames, labs, geom in (("SA", sa_frames, sa_labels, sa), ("LA", la_frames, la_labels, la)):
        affine = geom.affine()
        for phase, t in (("ED", ed), ("ES", es)):
            save(frames[t], affine, folder / f"{sid}_{view}_{phase}.nii.gz")
            if labels:
                save(labs[t], affine, folder / f"{sid}_{view}_{phase}_gt.nii.gz")
        if cine:
            save(np.stack(frames, axis=-1), affine, folder / f"{sid}_{view}_CINE.nii.gz")
    return {"id": sid, "folder": folder, "sa_frames": sa_frames, "sa_labels": sa_labels,
            "la_frames": la_frames, "la_labels": la_labels, "ed": ed, "es": es, "sa": sa, "la": la,
            "shape": shape}


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class SlowAcdcReader(AcdcReader):
    """An ACDC reader that takes ``delay_s`` per subject, so a test can kill an ingest mid-way."""

    name = "acdc-slow"
    delay_s = 0.6

    def read(self, source):
        time.sleep(self.delay_s)
        return super().read(source)


class DyingAcdcReader(AcdcReader):
    """An ACDC reader whose process dies (``os._exit``, no exception, no clean-up) on ``patient002``:
    what a reader crashing in native code, or the out-of-memory killer, does to an ingest worker."""

    name = "acdc-dying"

    def read(self, source):
        if source.subject_id == "patient002":
            import os

            os._exit(3)
        return super().read(source)
