"""Base-to-apex order of a short-axis (SA) stack from scanner geometry alone, never from labels.

A self-supervised target (``stack_position``, the ``slice_location`` pretext) must not depend on
expert labels, or it would leak them (test subjects' too). Every reader orders its SA stack here.

The rule
--------
1. **The LV long axis.** SA slices are planned perpendicular to the LV long axis, and the 2-, 3- and
   4-chamber long-axis (LA) planes contain it. With two or more LA planes that are not parallel, the
   axis direction is their common direction (the unit vector most nearly perpendicular to all their
   normals: the last right-singular vector of the stacked normals); with one LA plane, the SA stack
   normal projected into that plane; with none, the SA stack normal itself.
2. **Which end is the apex.** The LA planes fix the axis but not its sign: their fields of view show
   the base, the atria and the apex alike. The sign comes from the body: the LV apex points to the
   patient's left, anterior and inferior, ``APEX_DIRECTION_LPS = (+1, -1, -1)/sqrt 3`` in DICOM
   patient coordinates (LPS). The same anatomical prior is what Bai et al.'s ``ukbb_cardiac``
   pipeline uses ("the base is superior to the apex"). Patient coordinates follow the patient, so
   prone or feet-first scans do not change it.
3. **Order.** The SA slices are sorted by the position of their image centres along the stack
   normal oriented like the apex-pointing axis: stored slice 0 is the most basal. ``stack_position``
   is the distance from the basal slice over the stack length (0 base .. 1 apex; 0.5 for a single
   slice).

Failure cases (reported in ``StackOrder.rule`` and so in the subject's ``meta["sa_order"]``)
--------------------------------------------------------------------------------------------
* **Unusual anatomy**: the order is right whenever the true apex lies within 90 degrees of the
  prior; a dextrocardic apex (right, anterior, inferior) lies 71 degrees from it and is ordered
  right. Beyond ~72 degrees (|cos| < 0.3) the order is kept but flagged ``uncertain``; beyond 90
  degrees (an apex pointing up or back: rare congenital or displaced hearts) it is wrong.
* **No scanner orientation**: a file whose affine is the identity up to axis flips and voxel sizes
  (``has_scanner_orientation`` False; ACDC's files are all like this) says nothing about the body,
  so the prior cannot be applied. The caller must state its assumption (the ACDC reader keeps the
  file order, ACDC's documented base-first convention).
* **LA planes that miss the LV**: an RV two-chamber or RVOT view saved under an LV view's name tilts
  the axis; only its sign is used, so this matters only near the 72-degree flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Plane

APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)  # left, anterior, inferior
UNCERTAIN_COS = 0.3  # |cos| below this (axis > ~72 degrees from the prior): order flagged uncertain
PARALLEL_COS = np.cos(np.deg2rad(10.0))  # LA planes closer than this define no axis together


@dataclass(frozen=True)
class StackOrder:
    """``order[i]`` is the input slice stored as slice i (0 = base); ``positions[i]`` its 0..1 position."""

    order: list[int]
    positions: list[float]
    axis: np.ndarray  # unit, base -> apex, LPS
    rule: str
    certain: bool

    def meta(self) -> dict:
        return {"sa_order": self.rule, "sa_normal_base_to_apex": [float(x) for x in self.axis]}


def has_scanner_orientation(plane: Plane) -> bool:
    """False when the plane's directions are exactly world axes (an identity-like affine): real
    oblique SA stacks never are, and files converted without orientation (ACDC) always are."""
    dirs = np.abs(np.stack([plane.row_dir, plane.col_dir]))
    return not bool(np.all(np.isclose(dirs, 0.0, atol=1e-6) | np.isclose(dirs, 1.0, atol=1e-6)))


def long_axis(sa_normal: np.ndarray, la_planes: list[Plane] = ()) -> tuple[np.ndarray, str]:
    """Unit LV long-axis direction (sign arbitrary) and where it came from."""
    n = np.asarray(sa_normal, dtype=np.float64)
    normals = [p.normal for p in la_planes]
    distinct = [a for i, a in enumerate(normals) if all(abs(a @ b) < PARALLEL_COS for b in normals[:i])]
    if len(distinct) >= 2:
        _, _, vt = np.linalg.svd(np.stack(normals))
        return vt[-1], f"common line of {len(normals)} long-axis planes"
    if normals:
        m = normals[0]
        a = n - (n @ m) * m
        if np.linalg.norm(a) > 1e-6:
            return a / np.linalg.norm(a), "SA normal projected into the long-axis plane"
    return n / np.linalg.norm(n), "SA stack normal"


def order_stack(
    planes: list[Plane],
    shapes: list[tuple[int, int]],
    la_planes: list[Plane] = (),
    *,
    prior: np.ndarray = APEX_DIRECTION_LPS,
) -> StackOrder:
    """Order parallel SA ``planes`` (images of ``shapes``) base to apex; see the module docstring."""
    if not planes:
        raise ValueError("an SA stack needs at least one plane")
    normal = planes[0].normal
    axis, source = long_axis(normal, list(la_planes))
    cos = float(axis @ prior)
    if cos < 0:
        axis = -axis
    certain = abs(cos) >= UNCERTAIN_COS
    if normal @ axis < 0:
        normal = -normal
    pos = np.array([float(p.center(s) @ normal) for p, s in zip(planes, shapes)])
    order = [int(i) for i in np.argsort(pos, kind="stable")]
    span = float(pos[order[-1]] - pos[order[0]])
    positions = [float((pos[i] - pos[order[0]]) / span) if span > 0 else 0.5 for i in order]
    angle = np.degrees(np.arccos(min(1.0, abs(cos))))
    if certain:
        rule = (f"base to apex along the LV long axis ({source}), apex towards patient left, anterior "
                f"and inferior ({angle:.0f} deg from that prior)")
    else:
        rule = (f"uncertain: the LV long axis ({source}) is {angle:.0f} deg from the left-anterior-"
                "inferior apex prior; ordered by the prior's sign anyway")
    return StackOrder(order, positions, axis, rule, certain)


def file_order(n: int, reason: str) -> StackOrder:
    """The file's own slice order, kept as base first for a stated ``reason``."""
    positions = [0.5] if n == 1 else [i / (n - 1) for i in range(n)]
    return StackOrder(list(range(n)), positions, np.full(3, np.nan), f"assumed: file order ({reason})", False)
