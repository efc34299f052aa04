"""Slice planes in patient coordinates (DICOM LPS, millimetres) and their intersections.

One record for every 2-D slice, whatever it came from. The conventions are DICOM's:

* ``row_dir`` is ImageOrientationPatient[0:3], the direction in which the *column index* grows
  (along a row); ``col_dir`` is ImageOrientationPatient[3:6], the direction in which the *row index*
  grows (down a column).
* ``spacing`` is PixelSpacing = (row spacing, column spacing): the distance between adjacent rows,
  then between adjacent columns. Never divide both axes by the first value.
* pixel ``(r, c)`` (centre of the pixel in row r, column c of ``image[r, c]``) lies at
  ``origin + c * spacing[1] * row_dir + r * spacing[0] * col_dir``.

NIfTI affines map voxel indices to RAS; ``from_nifti`` flips x and y to LPS and takes the 2-D image
``data[:, :, k].T`` (so voxel axis i runs along a row, as dcm2niix writes DICOM-derived volumes).

The anatomical-position pretext (Bai et al., MICCAI 2019) needs the trace of one plane in
another: the line where a long-axis plane cuts a short-axis slice, in that slice's pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLANE_VECTOR_LEN = 11  # origin(3), row_dir(3), col_dir(3), spacing(2)
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


class GeometryError(ValueError):
    """A plane that cannot exist (zero or non-orthogonal directions, non-positive spacing)."""


@dataclass(frozen=True)
class Plane:
    """The plane of one 2-D slice in LPS mm (see the module docstring for the conventions)."""

    origin: np.ndarray  # (3,) centre of pixel (0, 0)
    row_dir: np.ndarray  # (3,) unit; column index grows along it
    col_dir: np.ndarray  # (3,) unit; row index grows along it
    spacing: tuple[float, float]  # (row spacing, column spacing) mm

    def __post_init__(self) -> None:
        o = np.asarray(self.origin, dtype=np.float64).reshape(3)
        r = np.asarray(self.row_dir, dtype=np.float64).reshape(3)
        c = np.asarray(self.col_dir, dtype=np.float64).reshape(3)
        sp = tuple(float(s) for s in np.asarray(self.spacing, dtype=np.float64).reshape(2))
        if not (np.all(np.isfinite(o)) and np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
            raise GeometryError("plane has non-finite origin or directions")
        nr, nc = np.linalg.norm(r), np.linalg.norm(c)
        if nr < 1e-6 or nc < 1e-6:
            raise GeometryError("plane direction has zero length (missing orientation?)")
        r, c = r / nr, c / nc
        if abs(float(r @ c)) > 1e-3:
            raise GeometryError(f"plane row/column directions are not orthogonal (dot={r @ c:.4f})")
        if not all(np.isfinite(s) and s > 0 for s in sp):
            raise GeometryError(f"pixel spacing must be positive, got {sp}")
        object.__setattr__(self, "origin", o)
        object.__setattr__(self, "row_dir", r)
        object.__setattr__(self, "col_dir", c)
        object.__setattr__(self, "spacing", sp)

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_dicom(cls, image_position, image_orientation, pixel_spacing) -> Plane:
        """From ImagePositionPatient, ImageOrientationPatient and PixelSpacing (row, column)."""
        iop = np.asarray(image_orientation, dtype=np.float64).reshape(6)
        return cls(np.asarray(image_position, dtype=np.float64), iop[:3], iop[3:], tuple(pixel_spacing))

    @classmethod
    def from_nifti(cls, affine: np.ndarray, k: float = 0.0) -> Plane:
        """Plane of slice ``k`` of a NIfTI volume whose 2-D image is ``data[:, :, k].T``."""
        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)):
            raise GeometryError("NIfTI affine must be a finite 4x4 matrix")
        lin = LPS_FROM_RAS @ a[:3, :3]
        origin = LPS_FROM_RAS @ (a[:3, :3] @ np.array([0.0, 0.0, k]) + a[:3, 3])
        along_row, down_col = lin[:, 0], lin[:, 1]  # voxel i runs along a row, j down a column
        return cls(origin, along_row, down_col, (np.linalg.norm(down_col), np.linalg.norm(along_row)))

    @classmethod
    def from_vector(cls, v) -> Plane:
        v = np.asarray(v, dtype=np.float64).reshape(PLANE_VECTOR_LEN)
        return cls(v[0:3], v[3:6], v[6:9], (v[9], v[10]))

    def to_vector(self) -> np.ndarray:
        return np.concatenate([self.origin, self.row_dir, self.col_dir, np.asarray(self.spacing)])

    def to_dict(self) -> dict:
        return {
            "origin": [float(x) for x in self.origin],
            "row_dir": [float(x) for x in self.row_dir],
            "col_dir": [float(x) for x in self.col_dir],
            "pixel_spacing": [float(x) for x in self.spacing],
        }

    # maps -----------------------------------------------------------------------------------
    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    def pixel_to_world(self, rows, cols) -> np.ndarray:
        """World points (..., 3) of pixel coordinates (row, column), fractional allowed."""
        r = np.asarray(rows, dtype=np.float64)[..., None]
        c = np.asarray(cols, dtype=np.float64)[..., None]
        return self.origin + c * self.spacing[1] * self.row_dir + r * self.spacing[0] * self.col_dir

    def world_to_pixel(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, signed distance from the plane in mm) of world points (..., 3)."""
        d = np.asarray(points, dtype=np.float64) - self.origin
        c = d @ self.row_dir / self.spacing[1]
        r = d @ self.col_dir / self.spacing[0]
        return r, c, d @ self.normal

    def affine_2d(self) -> np.ndarray:
        """4x4 LPS affine taking (col, row, 0, 1) to world; handy for NIfTI writing."""
        a = np.eye(4)
        a[:3, 0] = self.row_dir * self.spacing[1]
        a[:3, 1] = self.col_dir * self.spacing[0]
        a[:3, 2] = self.normal
        a[:3, 3] = self.origin
        return a

    def center(self, shape: tuple[int, int]) -> np.ndarray:
        """World position of the centre of an image of ``shape`` (rows, cols)."""
        return self.pixel_to_world((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)

    def is_parallel(self, other: Plane, tol_deg: float = 5.0) -> bool:
        return abs(float(self.normal @ other.normal)) >= np.cos(np.deg2rad(tol_deg))


def plane_intersection(a: Plane, b: Plane, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray] | None:
    """The 3-D line where planes ``a`` and ``b`` meet: (point, unit direction), or None if parallel."""
    na, nb = a.normal, b.normal
    d = np.cross(na, nb)
    s = np.linalg.norm(d)
    if s < tol:
        return None
    d = d / s
    # Point on both planes closest to a's origin: solve [na; nb; d] x = [na.oa, nb.ob, d.oa].
    m = np.stack([na, nb, d])
    rhs = np.array([na @ a.origin, nb @ b.origin, d @ a.origin])
    return np.linalg.solve(m, rhs), d


def trace_in_slice(slice_plane: Plane, other: Plane) -> tuple[np.ndarray, np.ndarray] | None:
    """Trace of ``other`` in ``slice_plane`` as (point (row, col), unit direction (drow, dcol)).

    Pixel coordinates are fractional; the direction is normalised in pixel units, which differs from
    the world direction when pixels are not square. None when the planes are parallel.
    """
    line = plane_intersection(slice_plane, other)
    if line is None:
        return None
    p, d = line
    r0, c0, _ = slice_plane.world_to_pixel(p)
    r1, c1, _ = slice_plane.world_to_pixel(p + d)
    v = np.array([r1 - r0, c1 - c0], dtype=np.float64)
    return np.array([r0, c0], dtype=np.float64), v / np.linalg.norm(v)


def cross_point(p1, d1, p2, d2, tol: float = 1e-9) -> np.ndarray | None:
    """Intersection of two 2-D lines p + t d (pixel coordinates); None when parallel."""
    p1, d1, p2, d2 = (np.asarray(x, dtype=np.float64) for x in (p1, d1, p2, d2))
    m = np.array([[d1[0], -d2[0]], [d1[1], -d2[1]]])
    if abs(np.linalg.det(m)) < tol:
        return None
    t = np.linalg.solve(m, p2 - p1)
    return p1 + t[0] * d1


def line_segment_in_image(point, direction, shape) -> tuple[np.ndarray, np.ndarray] | None:
    """Clip the 2-D line point + t*direction to the image rectangle; the two end points or None."""
    p = np.asarray(point, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    lo = np.array([-0.5, -0.5])
    hi = np.array([shape[0] - 0.5, shape[1] - 0.5])
    t0, t1 = -np.inf, np.inf
    for k in range(2):
        if abs(d[k]) < 1e-12:
            if p[k] < lo[k] or p[k] > hi[k]:
                return None
            continue
        ta, tb = (lo[k] - p[k]) / d[k], (hi[k] - p[k]) / d[k]
        t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
    if t0 > t1:
        return None
    return p + t0 * d, p + t1 * d
