"""Which plane group is which view: the SA stack, the LV long axis and the 2ch/3ch/4ch planes.

Geometry first, SeriesDescription only as a hint; the procedure and its limits are in the
package docstring (``cardiossl.datasets.readers.dicom``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from ...geometry import Plane, plane_intersection
from ...stack_order import order_stack
from .headers import ANTERIOR_LPS, APEX_DIRECTION_LPS, SEPTAL_LPS, DicomImage, description_hint

PARALLEL_DEG = 10.0  # normals closer than this: the same orientation (one stack)
LA_MAX_TILT_DEG = 40.0  # a long-axis plane's normal is within this of perpendicular to the SA normal
AXIS_PAIR_MIN_DEG = 20.0  # two planes closer than this do not define a usable axis line
AXIS_TOL_MM = 15.0  # a plane contains the LV axis when the axis lies within this of it
HINT_BONUS_DEG = 15.0  # what a view-naming SeriesDescription is worth in the angle costs
UNASSIGNED_COST_DEG = 45.0  # an LV plane left without a standard view costs this much misfit
MAX_LV_PLANES = 5  # the LV planes nearest the axis that take part in the view fit
REPEAT_DEG = 10.0  # an extra LV plane this close to an assigned one repeats that view
SAME_POSITION_MM = 1.0  # two SA planes closer than this along the normal share a position
_LOCALIZER = re.compile(r"locali[sz]er|scout|survey|tri[ _-]?pilot|\bloc\b|localiser", re.I)


@dataclass(eq=False)
class PlaneGroup:
    """The images of one series that share one plane: the cine frames of one slice."""

    series_uid: str
    series_number: int
    description: str
    plane: Plane
    shape: tuple[int, int]
    images: list[DicomImage] = field(default_factory=list)
    view: str = ""
    slice_index: int = 0
    stack_position: float = float("nan")
    reason: str = ""

    @property
    def name(self) -> str:
        return f"series {self.series_number} {self.description!r}"

    @property
    def hint(self) -> str | None:
        return description_hint(self.description)

    @property
    def n_frames(self) -> int:
        return len(self.images)


# ------------------------------------------------------------------------------------------------
# grouping
# ------------------------------------------------------------------------------------------------
def _same_plane(a: Plane, b: Plane, shape_a, shape_b) -> bool:
    return (
        shape_a == shape_b
        and np.allclose(a.spacing, b.spacing, atol=1e-4)
        and np.allclose(a.row_dir, b.row_dir, atol=1e-3)
        and np.allclose(a.col_dir, b.col_dir, atol=1e-3)
        and float(np.linalg.norm(a.origin - b.origin)) < 0.05
    )


def _frame_key(im: DicomImage):
    t = im.trigger_time
    return (0 if t is not None else 1, t if t is not None else 0.0, im.instance_number, str(im.path),
            im.frame_in_file or 0)


def group_planes(images: list[DicomImage]) -> list[PlaneGroup]:
    """Group by SeriesInstanceUID, then split each series by plane; frames sorted in cine order."""
    by_series: dict[str, list[DicomImage]] = {}
    for im in images:
        by_series.setdefault(im.series_uid, []).append(im)
    groups: list[PlaneGroup] = []
    for uid, ims in by_series.items():
        series_groups: list[PlaneGroup] = []
        seen_sop: set[str] = set()
        for im in ims:
            if im.sop_uid in seen_sop:  # the same instance stored twice
                continue
            seen_sop.add(im.sop_uid)
            for g in series_groups:
                if _same_plane(g.plane, im.plane, g.shape, im.shape):
                    g.images.append(im)
                    break
            else:
                series_groups.append(PlaneGroup(uid, im.series_number, im.description, im.plane, im.shape, [im]))
        for g in series_groups:
            g.images.sort(key=_frame_key)
            g.plane = g.images[0].plane
        groups.extend(series_groups)
    groups.sort(key=lambda g: (g.series_number, g.series_uid, tuple(np.round(g.plane.origin, 3))))
    return groups


def _is_localizer(g: PlaneGroup, has_cine: bool) -> bool:
    if any(t.upper() == "LOCALIZER" for im in g.images for t in im.image_type):
        return True
    if _LOCALIZER.search(g.description or ""):
        return True
    return has_cine and g.n_frames < 2


# ------------------------------------------------------------------------------------------------
# geometry: views
# ------------------------------------------------------------------------------------------------
def _angle_between_lines(u: np.ndarray, v: np.ndarray) -> float:
    """Angle in degrees (0..90) between two undirected 3-D lines."""
    c = abs(float(u @ v)) / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(min(1.0, c))))


def _orientation_clusters(groups: list[PlaneGroup]) -> list[list[PlaneGroup]]:
    clusters: list[list[PlaneGroup]] = []
    for g in groups:
        for c in clusters:
            if all(_angle_between_lines(g.plane.normal, h.plane.normal) <= PARALLEL_DEG for h in c):
                c.append(g)
                break
        else:
            clusters.append([g])
    return clusters


def _stack_normal(cluster: list[PlaneGroup]) -> np.ndarray:
    ref = cluster[0].plane.normal
    n = sum((g.plane.normal if g.plane.normal @ ref >= 0 else -g.plane.normal) for g in cluster)
    return n / np.linalg.norm(n)


def _distinct_positions(cluster: list[PlaneGroup], normal: np.ndarray) -> int:
    pos = sorted(float(g.plane.center(g.shape) @ normal) for g in cluster)
    return 1 + sum(1 for a, b in zip(pos, pos[1:]) if b - a > SAME_POSITION_MM)


def _in_plane_point(plane: Plane, others: list[Plane]) -> np.ndarray:
    """The point of ``plane`` closest (least squares) to all ``others``: where their traces cross."""
    a = np.array([[o.normal @ plane.row_dir, o.normal @ plane.col_dir] for o in others])
    b = np.array([o.normal @ (o.origin - plane.origin) for o in others])
    st, *_ = np.linalg.lstsq(a, b, rcond=None)
    return plane.origin + st[0] * plane.row_dir + st[1] * plane.col_dir


def _line_meets_plane(point, direction, plane: Plane) -> np.ndarray | None:
    den = float(direction @ plane.normal)
    if abs(den) < 1e-6:
        return None
    t = float((plane.origin - point) @ plane.normal) / den
    return point + t * direction


def _plane_distance(plane: Plane, point: np.ndarray) -> float:
    return abs(float((point - plane.origin) @ plane.normal))


def _in_plane_unit(v: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
    w = v - (v @ normal) * normal
    n = np.linalg.norm(w)
    return None if n < 1e-6 else w / n


VIEW_OFFSETS_DEG = {"4ch": 0.0, "3ch": -60.0, "2ch": 60.0}
"""Trace directions of the LV views in an SA slice relative to the 4ch trace, in the frame of
``assign_lv_views`` (the three planes are ~60 degrees apart; the 3ch lies on the anterior side)."""


def _line_diff(a, b):
    """Unsigned difference of line angles in degrees (mod 180), 0..90; broadcasts."""
    d = np.abs(np.asarray(a, dtype=np.float64) - b) % 180.0
    return np.minimum(d, 180.0 - d)


def assign_lv_views(thetas: list[float], hints: list[str | None]) -> tuple[list[str | None], float]:
    """Views for LV long-axis planes from their trace angles in an SA slice; (views, 4ch angle).

    ``thetas``: line angles in degrees, 0 = lateral, 90 = anterior, 180 = septal (patient right).
    Fits the pattern 4ch at phi, 3ch at phi - 60, 2ch at phi + 60 over phi and over every way to
    give each plane a view or none (each view at most once), minimising the angular misfit, plus the
    distance of phi from the septal direction (the 4ch runs through the RV), plus 45 degrees for every
    plane left without a view, minus 15 degrees for every view its description names.
    """
    phis = np.arange(0.0, 180.0, 0.5)
    prior = _line_diff(phis, 180.0)
    best = (np.inf, [None] * len(thetas), 180.0)
    choices = [None, *VIEW_OFFSETS_DEG]
    for combo in itertools.product(choices, repeat=len(thetas)):
        used = [v for v in combo if v is not None]
        if len(used) != len(set(used)):
            continue
        cost = prior.copy()
        for th, hint, v in zip(thetas, hints, combo):
            if v is None:
                cost += UNASSIGNED_COST_DEG
            else:
                cost += _line_diff(th - VIEW_OFFSETS_DEG[v], phis) - (HINT_BONUS_DEG if hint == v else 0.0)
        i = int(np.argmin(cost))
        if cost[i] < best[0] - 1e-9:
            best = (float(cost[i]), list(combo), float(phis[i]))
    return best[1], best[2]


@dataclass
class ViewDecision:
    sa: list[PlaneGroup]
    assigned: list[PlaneGroup]  # every kept group, with .view/.slice_index/.stack_position/.reason set
    skipped: list[str]
    meta: dict


def decide_views(groups: list[PlaneGroup]) -> ViewDecision:
    """Classify plane groups into SA / 2ch / 3ch / 4ch / rvot / la (see the module docstring)."""
    skipped: list[str] = []
    meta: dict = {}
    if not groups:
        return ViewDecision([], [], skipped, meta)
    clusters = _orientation_clusters(groups)

    def score(c):
        n = _stack_normal(c)
        perp = sum(1 for g in groups if g not in c
                   and _angle_between_lines(g.plane.normal, n) >= 90 - LA_MAX_TILT_DEG)
        hinted = sum(1 for g in c if g.hint == "sa")
        return (_distinct_positions(c, n), hinted, perp)

    best = max(clusters, key=score)
    sa_cluster: list[PlaneGroup] = []
    if score(best)[0] >= 2:
        sa_cluster = best
    else:  # no stack: trust a description that says SA
        hinted = [c for c in clusters if any(g.hint == "sa" for g in c)]
        sa_cluster = hinted[0] if hinted else []

    # --- SA stack ----------------------------------------------------------------------------
    sa: list[PlaneGroup] = []
    normal = None
    if sa_cluster:
        normal = _stack_normal(sa_cluster)
        if float(normal @ APEX_DIRECTION_LPS) < 0:
            normal = -normal  # provisional; the final order comes from stack_order with the LV planes
        ordered = sorted(sa_cluster, key=lambda g: (float(g.plane.center(g.shape) @ normal), -g.series_number))
        for g in ordered:
            pos = float(g.plane.center(g.shape) @ normal)
            if sa and abs(pos - float(sa[-1].plane.center(sa[-1].shape) @ normal)) <= SAME_POSITION_MM:
                prev = sa[-1]
                later = (g.series_number, g.n_frames) > (prev.series_number, prev.n_frames)
                keep, drop = (g, prev) if later else (prev, g)
                sa[-1] = keep
                skipped.append(f"{drop.name}: SA slice at the same position as {keep.name}; kept the later series")
                continue
            sa.append(g)

    # --- long-axis candidates ----------------------------------------------------------------
    candidates: list[PlaneGroup] = []
    for g in groups:
        if g in sa_cluster:
            continue
        if normal is None:
            candidates.append(g)
            continue
        tilt = 90.0 - _angle_between_lines(g.plane.normal, normal)
        if tilt <= LA_MAX_TILT_DEG:
            candidates.append(g)
        else:
            skipped.append(f"{g.name}: plane is {90 - tilt:.0f} deg from the SA stack normal "
                           "(neither SA nor long-axis); skipped")

    assigned: list[PlaneGroup] = []
    if candidates:
        if normal is None or len(candidates) < 2:
            for g in candidates:
                g.view = g.hint if g.hint in ("2ch", "3ch", "4ch", "rvot") else "la"
                g.reason = ("no SA stack and LV axis to check it against: view from the description"
                            if g.view != "la" else "long-axis plane of unknown type (no LV axis to compare with)")
            assigned = candidates
        else:
            assigned = _classify_long_axis(candidates, sa, normal, meta)
    if sa:  # base to apex (stack_order): the axis from the LV planes where there are any
        stack = order_stack([g.plane for g in sa], [g.shape for g in sa],
                            [g.plane for g in assigned if g.view in ("2ch", "3ch", "4ch")])
        sa = [sa[i] for i in stack.order]
        if "lv_centres" in meta:
            meta["lv_centres"] = [meta["lv_centres"][i] for i in stack.order]
        for i, g in enumerate(sa):
            g.view, g.slice_index, g.stack_position = "sa", i, stack.positions[i]
            g.reason = "SA stack (largest set of parallel, distinct planes)"
        meta.update(stack.meta())
    # unique slice_index per view for the non-SA views
    counters: dict[str, int] = {}
    for g in sorted(assigned, key=lambda g: (g.view, g.slice_index, g.series_number)):
        g.slice_index = counters.get(g.view, 0)
        counters[g.view] = g.slice_index + 1
    assigned.sort(key=lambda g: (g.series_number, g.series_uid, g.view, g.slice_index))
    return ViewDecision(sa, sa + assigned, skipped, meta)


def _classify_long_axis(cands: list[PlaneGroup], sa: list[PlaneGroup], normal: np.ndarray, meta: dict):
    ends = [sa[0].plane, sa[-1].plane]
    best = None
    for a, b in itertools.combinations(cands, 2):
        if _angle_between_lines(a.plane.normal, b.plane.normal) < AXIS_PAIR_MIN_DEG:
            continue
        line = plane_intersection(a.plane, b.plane)
        if line is None or _angle_between_lines(line[1], normal) > 45.0:
            continue
        pts = [_line_meets_plane(line[0], line[1], e) for e in ends]
        if any(p is None for p in pts):
            continue
        mid = sa[len(sa) // 2]
        r, c, _ = mid.plane.world_to_pixel(_line_meets_plane(line[0], line[1], mid.plane))
        if not (-0.5 <= r <= mid.shape[0] - 0.5 and -0.5 <= c <= mid.shape[1] - 0.5):
            continue  # the axis must pass through the SA field of view
        dist = {id(g): max(_plane_distance(g.plane, p) for p in pts) for g in cands}
        inliers = [g for g in cands if dist[id(g)] <= AXIS_TOL_MM]
        rvot_penalty = sum(0.5 for g in (a, b) if g.hint == "rvot")
        key = (len(inliers) - rvot_penalty, -sum(dist[id(g)] for g in inliers))
        if best is None or key > best[0]:
            best = (key, inliers, dist)
    if best is None:
        for g in cands:
            g.view = g.hint if g.hint in ("2ch", "3ch", "4ch", "rvot") else "la"
            g.reason = "long-axis planes do not meet in a common line through the SA stack: view from the description"
        return cands
    _, lv, dist = best
    centres = [_in_plane_point(s.plane, [g.plane for g in lv]) for s in sa]
    meta["lv_centres"] = [[float(x) for x in c] for c in centres]
    for g in cands:
        g.reason = f"{dist[id(g)]:.1f} mm from the LV long axis"

    mid = sa[len(sa) // 2].plane
    centre = centres[len(sa) // 2]
    ant = _in_plane_unit(ANTERIOR_LPS, mid.normal)
    sep = _in_plane_unit(SEPTAL_LPS, mid.normal)
    if ant is None or sep is None:
        ant = sep = None
    else:
        sep = _in_plane_unit(sep - (sep @ ant) * ant, mid.normal)

    traces = {}
    for g in cands:
        line = plane_intersection(mid, g.plane)
        traces[id(g)] = line
    out: list[PlaneGroup] = []

    # LV planes: fit the 4ch/3ch/2ch pattern (see the module docstring, step 4)
    if sep is None:
        for g in lv:
            g.view = g.hint if g.hint in ("2ch", "3ch", "4ch") else "la"
            g.reason += "; SA plane orientation gives no septal direction: view from the description"
        out.extend(lv)
    else:
        lat = -sep
        lv_sorted = sorted(lv, key=lambda g: dist[id(g)])
        considered = lv_sorted[:MAX_LV_PLANES]
        thetas = [float(np.degrees(np.arctan2(traces[id(g)][1] @ ant, traces[id(g)][1] @ lat))) % 180.0
                  for g in considered]
        views, phi = assign_lv_views(thetas, [g.hint for g in considered])
        meta["lv_view_pattern_4ch_deg"] = phi
        assigned_traces = {}
        for g, th, v in zip(considered, thetas, views):
            g.reason += f"; trace at {th:.0f} deg (lateral 0, anterior 90, septal 180)"
            if v is not None:
                g.view, g.slice_index = v, 0
                g.reason += f", fits the {v} direction {(phi + VIEW_OFFSETS_DEG[v]) % 180:.0f} deg"
                assigned_traces[v] = traces[id(g)][1]
        for g in lv_sorted:
            if g.view:
                out.append(g)
                continue
            near = [(_angle_between_lines(traces[id(g)][1], t), v) for v, t in assigned_traces.items()]
            near = [x for x in near if x[0] <= REPEAT_DEG]
            if near:
                g.view, g.slice_index = min(near)[1], 1
                g.reason += f"; repeats the {g.view} plane"
            else:
                g.view = "la"
                g.reason += "; contains the LV axis but fits no free standard view"
            out.append(g)

    # planes that miss the LV axis
    for g in cands:
        if g in lv:
            continue
        p, d = traces[id(g)]
        foot = p + ((centre - p) @ d) * d
        side = float((foot - centre) @ sep) if sep is not None else 0.0
        if g.hint in ("2ch", "3ch", "4ch"):
            g.view = "la"
            g.reason += f"; described as {g.hint} but misses the LV long axis: an unknown long-axis view"
        elif side > 0 or (sep is None and g.hint == "rvot"):
            g.view = "rvot"
            off = np.linalg.norm(foot - centre)
            g.reason += f"; misses the LV axis and passes {off:.0f} mm on the septal (RV) side"
        else:
            g.view = "la"
            g.reason += "; misses the LV long axis on the lateral side"
        out.append(g)
    return out


