"""Base-to-apex order from geometry: hand-built stacks with known anatomy, and the failure flags."""

from __future__ import annotations

import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.stack_order import (
    APEX_DIRECTION_LPS,
    file_order,
    has_scanner_orientation,
    long_axis,
    order_stack,
)


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def stack(normal, n=5, gap=8.0, shuffle=None):
    """SA planes perpendicular to ``normal`` at 0, gap, 2 gap ... along it (optionally shuffled)."""
    normal = unit(normal)
    row = unit(np.cross(normal, [0.3, 0.2, 0.9]))
    col = np.cross(normal, row)
    planes = [Plane(np.array([5.0, -3.0, 20.0]) + k * gap * normal - 40 * row - 40 * col, row, col, (1.5, 1.5))
              for k in range(n)]
    order = list(range(n)) if shuffle is None else shuffle
    return [planes[i] for i in order], normal


def la_plane(axis, angle, through=(5.0, -3.0, 20.0)):
    axis = unit(axis)
    ref = unit(np.cross(axis, [0.3, 0.2, 0.9]))
    d = np.cos(angle) * ref + np.sin(angle) * np.cross(axis, ref)
    return Plane(np.asarray(through) - 50 * d, d, -axis, (1.4, 1.4))


@pytest.mark.parametrize("towards_apex", [True, False])
def test_slice_zero_is_the_base_whichever_way_the_files_run(towards_apex):
    apex = unit([0.6, -0.5, -0.6])
    planes, normal = stack(apex if towards_apex else -apex, shuffle=[3, 0, 4, 1, 2])
    so = order_stack(planes, [(64, 64)] * 5)
    pos_along_apex = [float(planes[i].center((64, 64)) @ apex) for i in so.order]
    assert pos_along_apex == sorted(pos_along_apex)  # stored slice 0 is the most basal
    assert so.positions == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert so.certain and so.axis @ apex > 0.99 and so.rule.startswith("base to apex")


def test_long_axis_from_la_planes_beats_a_tilted_stack_normal():
    axis = unit([0.5, -0.7, -0.5])
    tilted = unit(axis + 0.3 * unit(np.cross(axis, [0, 0, 1])))
    las = [la_plane(axis, a) for a in (0.0, 1.0, 2.0)]
    got, source = long_axis(tilted, las)
    assert abs(got @ axis) > 1 - 1e-9 and "common line of 3" in source
    one, source = long_axis(tilted, las[:1])
    n = las[0].normal
    expect = unit(tilted - (tilted @ n) * n)
    assert abs(one @ expect) > 1 - 1e-9 and "projected" in source
    assert abs(long_axis(tilted, [])[0] @ tilted) > 1 - 1e-9


def test_an_axis_far_from_the_prior_is_flagged_uncertain():
    sideways = unit(np.cross(APEX_DIRECTION_LPS, [0, 0, 1]))  # perpendicular to the prior
    planes, _ = stack(sideways)
    so = order_stack(planes, [(64, 64)] * 5)
    assert not so.certain and so.rule.startswith("uncertain")


def test_identity_affines_have_no_scanner_orientation():
    assert not has_scanner_orientation(Plane([0, 0, 0], [1, 0, 0], [0, 1, 0], (1.5, 1.5)))
    assert not has_scanner_orientation(Plane([0, 0, 0], [0, -1, 0], [0, 0, 1], (1.5, 1.5)))
    assert has_scanner_orientation(stack([0.6, -0.5, -0.6])[0][0])
    fo = file_order(4, "no orientation")
    assert fo.order == [0, 1, 2, 3] and fo.positions == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert fo.rule == "assumed: file order (no orientation)" and not fo.certain
