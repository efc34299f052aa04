"""Where the long-axis (LA) planes cut one short-axis (SA) slice, and the box frame built from that.

Plain Python floats on 11-float plane vectors: this runs per sample in the data loader (cached per
slice), and for 3-vectors Python arithmetic is several times faster than numpy calls.

The box frame (centre ``c``, unit mm axes ``u`` septum -> lateral and ``v`` inferior -> anterior)
comes from whatever LA views a subject has, in this order:

1. the 2ch and 4ch traces, crossing at ``min_cross_deg`` or more: ``c`` their crossing, ``u`` the
   4ch trace, ``v`` the 2ch trace (Bai et al., MICCAI 2019);
2. any other two traces crossing at ``min_cross_deg`` or more (the widest angle wins): ``c`` their
   crossing; the 4ch trace gives ``u`` or the 2ch trace gives ``v``, and the other axis is the
   in-plane perpendicular (two traces of which neither is 2ch or 4ch cannot happen: there are three
   views);
3. **one usable view** (all of M&Ms-2: SA + 4ch; or traces too close to parallel) with
   ``single_view=True``: the 4ch (else 2ch) trace and a *virtual second plane*, perpendicular to it
   through the centre of the SA image (``image_centre``, kept through augmentation): ``c`` is the
   foot of the perpendicular from the image centre to the trace. SA fields of view are planned on
   the left ventricle, so the image centre is a geometric prior for the LV axis across the trace;
   along the trace the LA plane itself fixes it. Measured distance from the true 2ch x 4ch crossing
   (``bench/bench_position_fallback.py``; table in docs/cohort-format.md): on the real bivme exam
   median 3.5 mm (max 5.1) with only the 4ch view, 3.5 mm (max 7.1) with only the 2ch view; on
   synthetic v1, whose generator centres the SA field of view 15 +- 15 mm towards the RV, 16.1 and
   4.8 mm. The alternative anchor, the LA image centre carried along the SA normal, was worse on
   the real exam (12.8 / 10.6 mm). A single 3ch view fixes neither axis: no box frame.

Why a slice has no frame (``SliceGeometry.reason``), one of ``REASONS``.
"""

from __future__ import annotations

import math

import numpy as np

from ..datasets.records import LA_VIEWS

LATERAL = np.array([1.0, 1.0, 0.0]) / math.sqrt(2.0)  # LPS: patient left + posterior
ANTERIOR = np.array([0.0, -1.0, 1.0]) / math.sqrt(2.0)  # LPS: anterior + superior
# Tie-breakers (a trace exactly perpendicular to the first reference) make the rule total.
U_REFERENCES = (LATERAL, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
V_REFERENCES = (ANTERIOR, np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
MIN_PLANE_ANGLE_DEG = 10.0  # an LA plane within 10 degrees of the SA plane has no usable trace
MIN_CROSS_DEG = 30.0  # two traces crossing at less than this do not fix a point
_SIN_MIN = math.sin(math.radians(MIN_PLANE_ANGLE_DEG))

NO_LA = "no LA view"
PARALLEL = "traces parallel"
OUTSIDE = "crossing outside the image"
TRACES_OUTSIDE = "traces outside the image"
SINGLE_OFF = "single LA view (single_view fallback off)"
ONLY_3CH = "only a 3ch trace (fixes no box axis)"
NO_CENTRE = "single LA view without an image centre to anchor the fallback"
MALFORMED = "malformed plane"
REASONS = (NO_LA, PARALLEL, OUTSIDE, TRACES_OUTSIDE, SINGLE_OFF, ONLY_3CH, NO_CENTRE, MALFORMED)


def _dot(a, b) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a, b) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _unit(a) -> tuple[float, float, float] | None:
    n = math.sqrt(_dot(a, a))
    if not n > 1e-9:  # also False for NaN
        return None
    return (a[0] / n, a[1] / n, a[2] / n)


class PlaneF:
    """A plane vector unpacked into Python floats; ``ok`` False for a malformed one."""

    __slots__ = ("o", "r", "c", "n", "spr", "spc", "ok")

    def __init__(self, v) -> None:
        t = v if isinstance(v, list) else np.asarray(v, dtype=np.float64).reshape(11).tolist()
        self.o = t[0:3]
        r, c = _unit(t[3:6]), _unit(t[6:9])
        self.spr, self.spc = t[9], t[10]
        self.ok = (
            r is not None and c is not None and all(math.isfinite(x) for x in t)
            and self.spr > 0 and self.spc > 0 and abs(_dot(r, c)) < 1e-3
        )
        self.r, self.c = r, c
        self.n = _unit(_cross(r, c)) if self.ok else None

    def pixel(self, p) -> tuple[float, float]:
        """(row, col) of world point ``p`` projected into the plane."""
        d = (p[0] - self.o[0], p[1] - self.o[1], p[2] - self.o[2])
        return (_dot(d, self.c) / self.spr, _dot(d, self.r) / self.spc)

    def mm_dir(self, w) -> tuple[float, float]:
        """(d_row_mm, d_col_mm) of an in-plane world direction."""
        return (_dot(w, self.c), _dot(w, self.r))


def trace_f(sl: PlaneF, other: PlaneF):
    """(point (row, col) px, direction (d_row_mm, d_col_mm), world direction) or None; floats."""
    n, n2 = sl.n, other.n
    d = _cross(n, n2)
    s = math.sqrt(_dot(d, d))
    if s < _SIN_MIN:
        return None
    d = (d[0] / s, d[1] / s, d[2] / s)
    # The point of the line nearest the slice origin: p - o = h2 (n2 - cos n) / sin^2, which lies
    # in the slice (n . (p - o) = 0) and in the other plane (n2 . (p - o) = h2 = n2 . (o2 - o)).
    cos = _dot(n, n2)
    o, o2 = sl.o, other.o
    k = _dot(n2, (o2[0] - o[0], o2[1] - o[1], o2[2] - o[2])) / (s * s)
    rel = (k * (n2[0] - cos * n[0]), k * (n2[1] - cos * n[1]), k * (n2[2] - cos * n[2]))
    point = (_dot(rel, sl.c) / sl.spr, _dot(rel, sl.r) / sl.spc)
    dr, dc = _dot(d, sl.c), _dot(d, sl.r)
    m = math.hypot(dr, dc)
    return point, (dr / m, dc / m), d


def trace(slice_vec, other_vec) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Trace of plane ``other_vec`` in slice ``slice_vec`` (both 11-float plane vectors).

    Returns (point (row, col) in pixels, unit direction (d_row_mm, d_col_mm) in millimetres along the
    slice's row and column axes, unit world direction (LPS)), or None when the planes are within
    MIN_PLANE_ANGLE_DEG of parallel or a plane is malformed. Same line as
    ``geometry.trace_in_slice``; the mm direction is what square-in-mm boxes need when pixels are
    not square.
    """
    sl, other = PlaneF(slice_vec), PlaneF(other_vec)
    if not (sl.ok and other.ok):
        return None
    t = trace_f(sl, other)
    if t is None:
        return None
    return np.array(t[0]), np.array(t[1]), np.array(t[2])


def orient_sign(direction, references) -> float:
    """+1 or -1: the sign that makes ``direction`` point to the side of the first reference it is
    not perpendicular to."""
    for ref in references:
        d = _dot(direction, ref)
        if abs(d) > 1e-9:
            return 1.0 if d > 0 else -1.0
    return 1.0


def cross_mm(p1, d1, p2, d2, spacing) -> tuple[float, float] | None:
    """Crossing (row, col pixels) of two traces given as pixel points and mm directions."""
    spr, spc = spacing
    det = -d1[0] * d2[1] + d2[0] * d1[1]
    if abs(det) < 1e-6:
        return None
    br, bc = (p2[0] - p1[0]) * spr, (p2[1] - p1[1]) * spc
    t = (-br * d2[1] + d2[0] * bc) / det
    return (p1[0] + t * d1[0] / spr, p1[1] + t * d1[1] / spc)


def _oriented(trace_, refs):
    """(mm direction, world direction) of a trace, flipped to point to the references' side."""
    _, d, w = trace_
    if orient_sign(w, refs) < 0:
        return (-d[0], -d[1]), (-w[0], -w[1], -w[2])
    return d, w


class SliceGeometry:
    """Traces of the LA planes in one SA slice, and the box frame (c, u, v) (module docstring).

    ``ok`` is False when the slice plane itself is malformed; an LA plane that is absent (NaN row),
    malformed or within MIN_PLANE_ANGLE_DEG of the slice simply has no trace. ``frame`` says how the
    box frame was made (e.g. ``"2ch x 4ch"``, ``"virtual plane (4ch)"``), ``reason`` why there is
    none; ``virtual`` is the virtual trace's mm direction when the fallback made the frame.
    """

    __slots__ = ("ok", "spacing", "traces", "center", "u", "v", "frame", "reason", "virtual", "_boxes")

    def __init__(self, plane_vec, la_planes, views=LA_VIEWS, *, image_centre=None,
                 min_cross_deg: float = MIN_CROSS_DEG, single_view: bool = True) -> None:
        sl = PlaneF(plane_vec)
        la = np.asarray(la_planes, dtype=np.float64).reshape(len(LA_VIEWS), 11).tolist()
        self.ok = sl.ok
        self.spacing = np.array([sl.spr, sl.spc])
        # view -> (point (row, col) px, direction (row, col) mm, world direction), as float tuples
        self.traces: dict[str, tuple[tuple, tuple, tuple]] = {}
        self.center = self.u = self.v = self.frame = self.virtual = None
        self.reason: str | None = None
        self._boxes: dict = {}
        if not sl.ok:
            self.reason = MALFORMED
            return
        raw = self.traces
        present = 0
        for k, view in enumerate(LA_VIEWS):
            if view in views and math.isfinite(la[k][0]):
                other = PlaneF(la[k])
                if other.ok:
                    present += 1
                    t = trace_f(sl, other)
                    if t is not None:
                        raw[view] = t
        if not raw:
            self.reason = NO_LA if not present else PARALLEL
            return
        self._frame(sl, min_cross_deg, single_view, image_centre)

    def _frame(self, sl: PlaneF, min_cross_deg: float, single_view: bool, image_centre) -> None:
        raw = self.traces
        cos_max = math.cos(math.radians(min_cross_deg))
        pair = None
        if "2ch" in raw and "4ch" in raw and abs(_dot(raw["2ch"][2], raw["4ch"][2])) <= cos_max:
            pair = ("2ch", "4ch")
        else:
            best = cos_max
            names = [v for v in LA_VIEWS if v in raw]
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    c = abs(_dot(raw[a][2], raw[b][2]))
                    if c <= best:
                        best, pair = c, (a, b)
        u = v = None
        if "4ch" in raw and (pair is None or "4ch" in pair):
            u, uw = _oriented(raw["4ch"], U_REFERENCES)
        if "2ch" in raw and (pair is None or "2ch" in pair) and not (pair is None and u is not None):
            v, vw = _oriented(raw["2ch"], V_REFERENCES)
        if u is None and v is None:
            self.reason = ONLY_3CH if pair is None and set(raw) == {"3ch"} else PARALLEL
            return
        if v is None:  # the in-plane perpendicular of u, oriented like the 2ch trace would be
            w = _cross(sl.n, uw)
            v, vw = _oriented((None, sl.mm_dir(w), w), V_REFERENCES)
        elif u is None:
            w = _cross(vw, sl.n)
            u, uw = _oriented((None, sl.mm_dir(w), w), U_REFERENCES)
        if pair is not None:
            p1, p2 = raw[pair[0]], raw[pair[1]]
            c = cross_mm(p1[0], p1[1], p2[0], p2[1], (sl.spr, sl.spc))
            self.frame = f"{pair[0]} x {pair[1]}"
        else:
            if not single_view:
                self.reason = SINGLE_OFF if len(raw) == 1 else PARALLEL
                return
            if image_centre is None or not all(math.isfinite(x) for x in image_centre):
                self.reason = NO_CENTRE
                return
            view = "4ch" if "4ch" in raw else "2ch"
            p, d, _ = raw[view]
            # foot of the perpendicular from the image centre to the trace (pixel and mm axes)
            cr, cc = sl.pixel(image_centre)
            t = (cr - p[0]) * sl.spr * d[0] + (cc - p[1]) * sl.spc * d[1]
            c = (p[0] + t * d[0] / sl.spr, p[1] + t * d[1] / sl.spc)
            self.frame = f"virtual plane ({view})"
            self.virtual = v if view == "4ch" else u
        self.center, self.u, self.v = np.array(c), np.array(u), np.array(v)

    @staticmethod
    def pixel_of(plane_vec, point) -> tuple[float, float]:
        """(row, col) of a world point in the plane ``plane_vec``."""
        return PlaneF(plane_vec).pixel(np.asarray(point, dtype=np.float64).tolist())

    def inside(self, centre_px) -> bool:
        """Whether the box centre lies in the image centred on pixel ``centre_px`` (row, col)."""
        if self.center is None:
            return False
        r, c = float(self.center[0]), float(self.center[1])
        return -0.5 <= r <= 2 * centre_px[0] + 0.5 and -0.5 <= c <= 2 * centre_px[1] + 0.5

    def box_centres(self, distance_mm: float) -> np.ndarray:
        """[9, 2] (row, col) pixel centres, index = label - 1."""
        ij = np.array([(i, j) for j in (-1, 0, 1) for i in (-1, 0, 1)], dtype=np.float64)
        off_mm = distance_mm * (ij[:, :1] * self.u + ij[:, 1:] * self.v)
        return self.center + off_mm / self.spacing

    def box_bounds(self, shape, distance_mm: float, box_mm: float) -> list[tuple[int, int, int, int, int]]:
        """(label, r0, r1, c0, c1) slices of the nine boxes clipped to ``shape``, in painting order."""
        key = (shape, distance_mm, box_mm)
        bounds = self._boxes.get(key)
        if bounds is None:
            h, w = shape
            (cr, cc), (ur, uc), (vr, vc) = self.center.tolist(), self.u.tolist(), self.v.tolist()
            spr, spc = self.spacing.tolist()
            hr, hc = box_mm / 2.0 / spr, box_mm / 2.0 / spc
            bounds = []
            for k in PAINT_ORDER:
                i, j = k % 3 - 1, k // 3 - 1
                r = cr + distance_mm * (i * ur + j * vr) / spr
                c = cc + distance_mm * (i * uc + j * vc) / spc
                r0, r1 = max(0, math.ceil(r - hr)), min(h, math.floor(r + hr) + 1)
                c0, c1 = max(0, math.ceil(c - hc)), min(w, math.floor(c + hc) + 1)
                if r0 < r1 and c0 < c1:
                    bounds.append((k + 1, r0, r1, c0, c1))
            self._boxes[key] = bounds
        return bounds


PAINT_ORDER = (0, 2, 6, 8, 1, 3, 5, 7, 4)  # corners, then edges, then the centre box (wins overlaps)


def paint_boxes(shape, bounds) -> np.ndarray:
    """uint8 label image with the boxes of ``SliceGeometry.box_bounds`` painted in order."""
    out = np.zeros(shape, dtype=np.uint8)
    for label, r0, r1, c0, c1 in bounds:
        out[r0:r1, c0:c1] = label
    return out


def segment_inside(geo: SliceGeometry, view: str, centre_px) -> bool:
    """Whether ``view``'s trace crosses the image centred on pixel ``centre_px``."""
    from ..datasets.geometry import line_segment_in_image

    p, d_mm, _ = geo.traces[view]
    shape = (2 * centre_px[0] + 1, 2 * centre_px[1] + 1)
    return line_segment_in_image(np.asarray(p), np.asarray(d_mm) / geo.spacing, shape) is not None
