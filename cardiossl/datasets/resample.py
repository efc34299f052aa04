"""Resampling of one 2-D slice onto the store's training grid.

The store keeps every slice on ONE square grid (``grid_size`` pixels at ``spacing_mm``) so that a
training batch is a plain stack of arrays and a pixel means the same distance everywhere. The new
grid keeps the source slice's row and column directions and its centre (the centre of the source
image), so nothing is rotated and the heart, which scanners centre in the field of view, stays
centred. The returned Plane is the exact plane of the new grid: geometry survives resampling.

Images use linear interpolation with a Gaussian pre-filter when the grid is coarser than the source
(anti-aliasing, sigma = (zoom - 1) / 2 source pixels, as scikit-image's ``rescale`` does); labels use
nearest neighbour so they stay in the label set. Outside the source field of view both are 0.

Why separable index arithmetic instead of ``scipy.ndimage.map_coordinates``: the grid keeps the source
directions, so grid row R samples source row ``r0 + zoom_r * R`` whatever the column, and the 2-D map is
a product of two 1-D maps. Bilinear interpolation is then two 1-D linear interpolations (rows, then
columns) on gathered rows/columns, and nearest neighbour is two index lookups: the same values as
``map_coordinates(order=1 / order=0, mode="constant", cval=0)`` (a sample is 0 when its row or column
coordinate lies outside [0, n - 1]; nearest rounds half up), at a fraction of the cost, because no
per-pixel coordinate array is built or walked. The same float64 products and sums are formed, so the
output matches map_coordinates bit for bit (checked over random shapes, spacings and grids, images
and labels).

The Gaussian pre-filter is kept as it was: it only runs when the grid is more than ~10% coarser
than the source (sigma > 0.05 source pixels), where skipping it would alias fine texture into the
stored images, and docs/cohort-format.md specifies it.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from .geometry import Plane


def grid_plane(plane: Plane, shape: tuple[int, int], grid_size: int, spacing_mm: float) -> Plane:
    """The plane of a ``grid_size``-square grid at ``spacing_mm``, same directions, same centre."""
    half = (grid_size - 1) / 2.0 * float(spacing_mm)
    centre = plane.center(shape)
    origin = centre - half * plane.row_dir - half * plane.col_dir
    return Plane(origin, plane.row_dir, plane.col_dir, (float(spacing_mm), float(spacing_mm)))


_GRID_PLANES: dict[int, tuple] = {}


def _cached_grid_plane(plane: Plane, shape: tuple[int, int], grid_size: int, spacing_mm: float) -> Plane:
    """``grid_plane``, remembered per source Plane object: every cine frame of a slice shares one.

    Plane is a frozen dataclass, so the same object always gives the same grid plane; the entry
    keeps its source plane alive and is checked by identity, so a recycled ``id`` never matches.
    """
    key = id(plane)
    hit = _GRID_PLANES.get(key)
    if hit is not None and hit[0] is plane and hit[1] == (shape, grid_size, spacing_mm):
        return hit[2]
    plane_g = grid_plane(plane, shape, grid_size, spacing_mm)
    if len(_GRID_PLANES) >= 4096:
        _GRID_PLANES.clear()
    _GRID_PLANES[key] = (plane, (tuple(shape), grid_size, spacing_mm), plane_g)
    return plane_g


def resample_slice(
    image: np.ndarray,
    plane: Plane,
    grid_size: int,
    spacing_mm: float,
    label: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, Plane]:
    """Resample ``image`` (and ``label``) on ``plane`` to the training grid.

    Returns ``(image_g float32 [G, G], label_g uint8 [G, G] or None, plane_g)``; pixel (R, C) of the
    grid is the world point ``plane_g.pixel_to_world(R, C)``.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"resample_slice needs a 2-D image, got shape {image.shape}")
    if label is not None and np.shape(label) != image.shape:
        raise ValueError(f"label shape {np.shape(label)} differs from image shape {image.shape}")
    if int(grid_size) < 2 or not float(spacing_mm) > 0:
        raise ValueError(f"grid_size must be >= 2 and spacing_mm > 0, got {grid_size}, {spacing_mm}")
    grid_size = int(grid_size)
    plane_g = _cached_grid_plane(plane, image.shape, grid_size, float(spacing_mm))

    # Same directions: source pixel coordinates are an axis-aligned affine map of grid coordinates.
    zoom_r = float(spacing_mm) / plane.spacing[0]  # source rows per grid row
    zoom_c = float(spacing_mm) / plane.spacing[1]
    src = image.astype(np.float32, copy=False)
    sigma = (max(zoom_r - 1.0, 0.0) / 2.0, max(zoom_c - 1.0, 0.0) / 2.0)
    if max(sigma) > 0.05:
        src = ndimage.gaussian_filter(src, sigma=sigma, mode="nearest")
    (ri0, ri1, rw0, rw1, rn), (ci0, ci1, cw0, cw1, cn), outside = _grid_map(
        image.shape, zoom_r, zoom_c, grid_size
    )
    # rows first (G x cols), then columns (G x G); float64 accumulation as map_coordinates does
    tmp = src[ri0].astype(np.float64)
    tmp *= rw0
    tmp += src[ri1] * rw1
    image_g = tmp[:, ci0]
    image_g *= cw0
    image_g += tmp[:, ci1] * cw1
    image_g = image_g.astype(np.float32)

    label_g = None
    if label is not None:
        label_g = np.asarray(label, dtype=np.uint8)[rn][:, cn]
        if outside is not None:
            label_g[outside] = 0
    return image_g, label_g, plane_g


@functools.lru_cache(maxsize=256)
def _grid_map(shape: tuple[int, int], zoom_r: float, zoom_c: float, grid_size: int):
    """Per-axis interpolation tables of one (source shape, zoom, grid): shared by a whole stack."""
    r0 = (shape[0] - 1) / 2.0 - (grid_size - 1) / 2.0 * zoom_r
    c0 = (shape[1] - 1) / 2.0 - (grid_size - 1) / 2.0 * zoom_c
    rows = _linear_1d(r0 + zoom_r * np.arange(grid_size), shape[0])
    cols = _linear_1d(c0 + zoom_c * np.arange(grid_size), shape[1])
    r_in, c_in = rows[-1], cols[-1]
    outside = None if (r_in.all() and c_in.all()) else ~(r_in[:, None] & c_in[None, :])
    rows = (rows[0], rows[1], rows[2][:, None], rows[3][:, None], rows[4])
    for a in (*rows, *cols[:5], *(() if outside is None else (outside,))):
        a.setflags(write=False)  # cached: shared by every later call
    return rows, cols[:5], outside


def _linear_1d(x: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Linear-interpolation neighbours and weights, nearest index and in-range mask at ``x`` (n samples).

    Samples outside [0, n - 1] get zero weights (0 outside, as map_coordinates' "constant" mode);
    nearest neighbour rounds half up, as map_coordinates(order=0) does.
    """
    inside = (x >= 0.0) & (x <= n - 1)
    i0 = np.clip(np.floor(x), 0, max(n - 2, 0)).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = np.where(inside, x - i0, 0.0)
    w1 = np.where(i1 > i0, frac, 0.0)
    w0 = np.where(inside, 1.0 - w1, 0.0)
    nearest = np.clip(np.floor(x + 0.5), 0, n - 1).astype(np.intp)
    return i0, i1, w0, w1, nearest, inside


def label_to_source(label_g: np.ndarray, plane_g: Plane, plane: Plane, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of grid labels back onto a source slice's pixel grid (0 outside
    the grid): the inverse of ``resample_slice`` for labels, used by prediction (labels in the
    input's geometry) and by evaluation (scores on the source pixels)."""
    rr, cc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r, c, _ = plane_g.world_to_pixel(plane.pixel_to_world(rr, cc))
    return ndimage.map_coordinates(np.asarray(label_g, dtype=np.uint8), [r, c], order=0, mode="constant",
                                   cval=0, prefilter=False).astype(np.uint8)
