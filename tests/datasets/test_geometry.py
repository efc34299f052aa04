"""Plane records and their intersections against cases built by hand."""

import numpy as np
import pytest

from cardiossl.datasets.geometry import (
    GeometryError,
    Plane,
    cross_point,
    line_segment_in_image,
    plane_intersection,
    trace_in_slice,
)


def rotation(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def test_dicom_pixel_convention_non_square():
    # IOP row direction +x, column direction +y; PixelSpacing [row spacing 2, column spacing 0.5].
    p = Plane.from_dicom([10, 20, 30], [1, 0, 0, 0, 1, 0], [2.0, 0.5])
    # Pixel (row 3, column 4): 4 columns along x at 0.5 mm, 3 rows along y at 2 mm.
    np.testing.assert_allclose(p.pixel_to_world(3, 4), [12.0, 26.0, 30.0])
    r, c, d = p.world_to_pixel([12.0, 26.0, 35.0])
    assert (r, c, d) == pytest.approx((3.0, 4.0, 5.0))
    np.testing.assert_allclose(p.normal, [0, 0, 1])


def test_nifti_affine_to_lps_plane():
    # RAS affine: voxel i along R (-x in LPS) at 1.25 mm, j along A (-y in LPS) at 1.5 mm, k up 8 mm.
    aff = np.array([[1.25, 0, 0, -100], [0, 1.5, 0, -50], [0, 0, 8, 20], [0, 0, 0, 1]], float)
    p = Plane.from_nifti(aff, k=2)
    np.testing.assert_allclose(p.origin, [100, 50, 36])
    np.testing.assert_allclose(p.row_dir, [-1, 0, 0])
    np.testing.assert_allclose(p.col_dir, [0, -1, 0])
    assert p.spacing == pytest.approx((1.5, 1.25))  # (row spacing = along j, column spacing = along i)
    # Voxel (i=4, j=6, k=2) is image pixel (row 6, column 4) of data[:, :, 2].T.
    ras = aff @ np.array([4, 6, 2, 1.0])
    np.testing.assert_allclose(p.pixel_to_world(6, 4), [-ras[0], -ras[1], ras[2]])


def test_vector_round_trip_and_validation():
    rot = rotation([1, 2, 3], 37)
    p = Plane([1, 2, 3], rot[:, 0], rot[:, 1], (1.3, 1.7))
    q = Plane.from_vector(p.to_vector())
    np.testing.assert_allclose(q.to_vector(), p.to_vector())
    with pytest.raises(GeometryError, match="orthogonal"):
        Plane([0, 0, 0], [1, 0, 0], [1, 1, 0], (1, 1))
    with pytest.raises(GeometryError, match="zero length"):
        Plane([0, 0, 0], [0, 0, 0], [0, 1, 0], (1, 1))
    with pytest.raises(GeometryError, match="positive"):
        Plane([0, 0, 0], [1, 0, 0], [0, 1, 0], (1, 0))


def test_intersection_of_oblique_planes_lies_on_both():
    rot_a, rot_b = rotation([1, 1, 0], 25), rotation([0, 1, 1], 70)
    a = Plane([5, -3, 2], rot_a[:, 0], rot_a[:, 1], (1.0, 1.0))
    b = Plane([-4, 8, 1], rot_b[:, 0], rot_b[:, 1], (1.0, 1.0))
    point, direction = plane_intersection(a, b)
    for t in (-50.0, 0.0, 33.0):
        x = point + t * direction
        assert abs(a.world_to_pixel(x)[2]) < 1e-9
        assert abs(b.world_to_pixel(x)[2]) < 1e-9
    assert plane_intersection(a, Plane(a.origin + 5 * a.normal, a.row_dir, a.col_dir, (1, 1))) is None


def test_trace_with_non_square_pixels_is_exact():
    # Slice in z = 0 with 2 mm rows and 0.5 mm columns; the other plane is x = 3 mm (a vertical line).
    sa = Plane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [2.0, 0.5])
    la = Plane.from_dicom([3, 0, 0], [0, 1, 0, 0, 0, 1], [1.0, 1.0])
    point, direction = trace_in_slice(sa, la)
    assert point[1] == pytest.approx(6.0)  # x = 3 mm is column 6 at 0.5 mm per column
    assert abs(direction[1]) == pytest.approx(0.0, abs=1e-12)
    # A 45-degree plane through the origin, x = y: with 2 mm rows and 0.5 mm columns the trace runs
    # 1 row per 4 columns in pixel units, not along the diagonal.
    diag = Plane.from_dicom([0, 0, 0], [0, 0, 1, 1 / np.sqrt(2), 1 / np.sqrt(2), 0], [1.0, 1.0])
    point, direction = trace_in_slice(sa, diag)
    assert direction[0] / direction[1] == pytest.approx(0.25)
    np.testing.assert_allclose(sa.pixel_to_world(*point)[:2] @ [1, -1], 0.0, atol=1e-9)


def test_cross_point_and_clipping():
    c = cross_point([0, 0], [1, 0], [5, 5], [0, 1])
    np.testing.assert_allclose(c, [5, 0])
    assert cross_point([0, 0], [1, 0], [0, 1], [1, 0]) is None
    a, b = line_segment_in_image([10, 10], [0, 1], (20, 30))
    np.testing.assert_allclose([a, b], [[10, -0.5], [10, 29.5]])
    assert line_segment_in_image([-5, 0], [0, 1], (20, 30)) is None
