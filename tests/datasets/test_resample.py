"""resample_slice: the grid plane is exact and image/label values land at the right world points."""

from __future__ import annotations

import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.resample import resample_slice
from store_records import oblique_frame


def _plane(seed=0, spacing=(2.0, 1.7)):
    row, col, _ = oblique_frame(seed)
    return Plane(np.array([10.0, -20.0, 35.0]), row, col, spacing)


def test_grid_plane_is_exact_same_directions_same_centre():
    plane = _plane(spacing=(1.3, 0.9))
    image = np.zeros((40, 50), np.float32)
    _, _, g = resample_slice(image, plane, 32, 1.5)
    np.testing.assert_allclose(g.row_dir, plane.row_dir, atol=1e-12)
    np.testing.assert_allclose(g.col_dir, plane.col_dir, atol=1e-12)
    assert g.spacing == (1.5, 1.5)
    np.testing.assert_allclose(g.center((32, 32)), plane.center((40, 50)), atol=1e-9)
    # pixel (0, 0) of the grid is (G-1)/2 pixels from the centre along both directions
    np.testing.assert_allclose(g.pixel_to_world(31, 31) - g.pixel_to_world(0, 0), 31 * 1.5 * (plane.row_dir + plane.col_dir))


@pytest.mark.parametrize("spacing", [(2.0, 1.7), (1.0, 0.8)])  # coarser source (upsampling) and finer (anti-aliased)
def test_linear_world_function_is_reproduced(spacing):
    """An image that is a linear function of the world point must come back as the same function."""
    plane = _plane(3, spacing)
    shape = (60, 64)
    w = np.array([0.7, -1.3, 2.1])
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    image = (plane.pixel_to_world(rr, cc) @ w + 100).astype(np.float32)
    out, _, g = resample_slice(image, plane, 24, 1.5)
    rr, cc = np.mgrid[:24, :24]
    expected = g.pixel_to_world(rr, cc) @ w + 100
    # the grid (36 mm) lies well inside the source field of view; the Gaussian pre-filter keeps linear functions
    inner = slice(3, 21)
    np.testing.assert_allclose(out[inner, inner], expected[inner, inner], atol=0.05)
    assert out.dtype == np.float32 and out.shape == (24, 24)


def test_label_nearest_and_world_position():
    plane = _plane(5, (1.4, 1.2))
    shape = (50, 46)
    label = np.zeros(shape, np.uint8)
    label[10:16, 30:38] = 3
    label[30:40, 5:12] = 2
    image = label.astype(np.float32) * 100
    img_g, lab_g, g = resample_slice(image, plane, 48, 1.5, label)
    assert lab_g.dtype == np.uint8 and set(np.unique(lab_g)) <= {0, 2, 3}
    # the centre of each labelled block maps to a grid pixel with the same label
    for r, c, v in ((12.5, 33.5, 3), (34.5, 8.0, 2)):
        R, C, dist = g.world_to_pixel(plane.pixel_to_world(r, c))
        assert abs(dist) < 1e-9
        assert lab_g[int(round(float(R))), int(round(float(C)))] == v
        assert img_g[int(round(float(R))), int(round(float(C)))] > 50
    # area is preserved (mm^2) within a pixel rim
    for v in (2, 3):
        src_area = (label == v).sum() * 1.4 * 1.2
        grid_area = (lab_g == v).sum() * 1.5 * 1.5
        assert abs(grid_area - src_area) / src_area < 0.25


def test_outside_the_source_field_of_view_is_zero():
    plane = _plane(1, (1.0, 1.0))
    image = np.full((20, 20), 7.0, np.float32)
    label = np.ones((20, 20), np.uint8)
    out, lab, g = resample_slice(image, plane, 64, 1.5, label)
    assert out[0, 0] == 0 and lab[0, 0] == 0 and out[32, 32] == pytest.approx(7.0, abs=1e-4) and lab[32, 32] == 1


def test_bad_input_is_refused():
    plane = _plane()
    with pytest.raises(ValueError, match="2-D"):
        resample_slice(np.zeros((4, 4, 4)), plane, 16, 1.5)
    with pytest.raises(ValueError, match="label shape"):
        resample_slice(np.zeros((10, 10)), plane, 16, 1.5, np.zeros((10, 11), np.uint8))
    with pytest.raises(ValueError, match="spacing_mm"):
        resample_slice(np.zeros((10, 10)), plane, 16, 0.0)


# ---- the separable resampler == scipy.ndimage.map_coordinates ------------------------------------

from scipy import ndimage  # noqa: E402


def _random_cases(n_cases=50, seed=2024):
    """Random source shapes, (non-square) pixel spacings, grids and oblique planes; both up- and downsampling."""
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        row, col, _ = oblique_frame(100 + i)
        shape = (int(rng.integers(2, 72)), int(rng.integers(2, 72)))
        spacing = (float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.5, 3.0)))
        if i % 5 == 0:
            spacing = (spacing[0], spacing[0])  # square pixels too
        grid, grid_spacing = int(rng.integers(2, 64)), float(rng.choice([1.0, 1.25, 1.5, 2.0, rng.uniform(0.6, 3.0)]))
        plane = Plane(rng.normal(size=3) * 80, row, col, spacing)
        image = (rng.normal(size=shape) * 200 + 300).astype(np.float32)
        label = rng.integers(0, 4, shape).astype(np.uint8)
        yield i, image, label, plane, grid, grid_spacing


def _prefiltered(image, plane, grid_spacing):
    """The documented anti-aliasing: Gaussian, sigma = (zoom - 1) / 2 source pixels per coarser axis, when > 0.05."""
    zoom = (grid_spacing / plane.spacing[0], grid_spacing / plane.spacing[1])
    sigma = tuple(max(z - 1.0, 0.0) / 2.0 for z in zoom)
    src = image.astype(np.float32)
    if max(sigma) > 0.05:
        src = ndimage.gaussian_filter(src, sigma=sigma, mode="nearest")
    return src, max(sigma) > 0.05


def _world_coordinates(plane, plane_g, grid):
    """Source (row, col) of every grid pixel, through world space."""
    rr, cc = np.mgrid[:grid, :grid]
    r, c, dist = plane.world_to_pixel(plane_g.pixel_to_world(rr, cc))
    np.testing.assert_allclose(dist, 0.0, atol=1e-9)  # the grid lies in the source plane
    return np.asarray(r, np.float64), np.asarray(c, np.float64)


def test_resampler_matches_map_coordinates_through_world_space():
    """Reference: per grid pixel, world point -> source (row, col) -> map_coordinates (order 1 images,
    order 0 labels, constant 0 outside), after the documented Gaussian pre-filter when it applies.

    world_to_pixel differs from the resampler's coordinates by ~1e-13 pixels, so images are compared to
    float32 rounding, and labels exactly except where a coordinate sits on a nearest-neighbour tie
    (x.5) or on the edge of the source, where that rounding noise decides either way.
    """
    n_filtered = 0
    for i, image, label, plane, grid, grid_spacing in _random_cases():
        out, lab, plane_g = resample_slice(image, plane, grid, grid_spacing, label)
        assert out.dtype == np.float32 and lab.dtype == np.uint8 and out.shape == lab.shape == (grid, grid)
        r, c = _world_coordinates(plane, plane_g, grid)
        src, filtered = _prefiltered(image, plane, grid_spacing)
        n_filtered += filtered
        ref = ndimage.map_coordinates(src, [r, c], order=1, mode="constant", cval=0.0)
        ref_lab = ndimage.map_coordinates(label, [r, c], order=0, mode="constant", cval=0)

        def on_edge(x, n):
            return (np.abs(x) < 1e-9) | (np.abs(x - (n - 1)) < 1e-9)

        def on_tie(x):
            return np.abs(np.abs(x - np.floor(x)) - 0.5) < 1e-9

        edge = on_edge(r, image.shape[0]) | on_edge(c, image.shape[1])
        scale = float(np.abs(src).max())
        np.testing.assert_allclose(out[~edge], ref[~edge], rtol=1e-6, atol=1e-6 * scale, err_msg=f"case {i}")
        sure = ~edge & ~on_tie(r) & ~on_tie(c)
        np.testing.assert_array_equal(lab[sure], ref_lab[sure], err_msg=f"case {i}")
        assert sure.mean() > 0.5, f"case {i}: too few comparable label pixels"
    assert 10 < n_filtered < 45  # both the anti-aliased and the plain paths are covered


def test_resampler_is_bit_identical_to_map_coordinates_on_the_grid_map():
    """Bit for bit: with the grid's source coordinates formed as the affine 1-D maps the grid is
    (row r0 + zoom_r * R, col c0 + zoom_c * C; checked against world space to 1e-9 pixels),
    map_coordinates gives exactly the resampler's image and label."""
    for i, image, label, plane, grid, grid_spacing in _random_cases(seed=77):
        out, lab, plane_g = resample_slice(image, plane, grid, grid_spacing, label)
        zoom_r, zoom_c = grid_spacing / plane.spacing[0], grid_spacing / plane.spacing[1]
        r0 = (image.shape[0] - 1) / 2.0 - (grid - 1) / 2.0 * zoom_r  # same centre
        c0 = (image.shape[1] - 1) / 2.0 - (grid - 1) / 2.0 * zoom_c
        r, c = np.meshgrid(r0 + zoom_r * np.arange(grid), c0 + zoom_c * np.arange(grid), indexing="ij")
        r_world, c_world = _world_coordinates(plane, plane_g, grid)
        np.testing.assert_allclose(r, r_world, atol=1e-9)
        np.testing.assert_allclose(c, c_world, atol=1e-9)
        src, _ = _prefiltered(image, plane, grid_spacing)
        ref = ndimage.map_coordinates(src, [r, c], order=1, mode="constant", cval=0.0)
        ref_lab = ndimage.map_coordinates(label, [r, c], order=0, mode="constant", cval=0)
        assert ref.dtype == out.dtype
        assert np.array_equal(out, ref), f"case {i}: max |diff| {np.abs(out - ref).max()}"
        assert np.array_equal(lab, ref_lab), f"case {i}: {(lab != ref_lab).sum()} label pixels differ"


@pytest.mark.parametrize(
    "shape,spacing,grid,grid_spacing",
    [((1, 9), (1.5, 1.5), 8, 1.5), ((9, 1), (2.0, 0.7), 8, 1.0), ((1, 1), (1.0, 1.0), 4, 3.0),
     ((2, 2), (1.0, 2.0), 5, 1.5), ((40, 40), (1.5, 1.5), 40, 1.5), ((41, 40), (1.5, 1.5), 40, 1.5)],
)
def test_resampler_bit_identical_on_degenerate_and_identity_grids(shape, spacing, grid, grid_spacing):
    """Single-row/column sources, a 1x1 source, the identity grid and half-pixel-shifted centres (ties)."""
    rng = np.random.default_rng(3)
    plane = _plane(7, spacing)
    image = rng.normal(size=shape).astype(np.float32)
    label = rng.integers(0, 4, shape).astype(np.uint8)
    out, lab, _ = resample_slice(image, plane, grid, grid_spacing, label)
    zoom_r, zoom_c = grid_spacing / spacing[0], grid_spacing / spacing[1]
    r, c = np.meshgrid((shape[0] - 1) / 2.0 - (grid - 1) / 2.0 * zoom_r + zoom_r * np.arange(grid),
                       (shape[1] - 1) / 2.0 - (grid - 1) / 2.0 * zoom_c + zoom_c * np.arange(grid), indexing="ij")
    src, _ = _prefiltered(image, plane, grid_spacing)
    assert np.array_equal(out, ndimage.map_coordinates(src, [r, c], order=1, mode="constant", cval=0.0))
    assert np.array_equal(lab, ndimage.map_coordinates(label, [r, c], order=0, mode="constant", cval=0))
    if shape == (40, 40):
        assert np.array_equal(out, image) and np.array_equal(lab, label)  # the identity grid


def test_resampler_does_not_modify_its_input():
    for _, image, label, plane, grid, grid_spacing in _random_cases(n_cases=5, seed=9):
        before = image.copy(), label.copy()
        resample_slice(image, plane, grid, grid_spacing, label)
        resample_slice(image, plane, grid, grid_spacing, label)  # cached grid maps: same again
        assert np.array_equal(image, before[0]) and np.array_equal(label, before[1])
