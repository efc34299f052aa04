"""Geometry QC: where each short-axis (SA) slice's content really is, measured against the long-axis images.

An SA slice and a long-axis (LA) image meet along a 3-D line, and both images show the same anatomy
there. When the slice was acquired in another breath-hold than the LA cine (UK Biobank: one per
slice) its content sits a few millimetres from where its header plane says. This module measures
that in-plane misregistration:

1. For each LA view, the line where its plane meets the SA plane (``geometry.plane_intersection``),
   sampled every ``sample_mm`` where it lies inside both images; the LA profile is the LA image
   along the line, the SA profile the SA image along the same line moved by a candidate in-plane
   shift ``s`` (a 2-D vector in the SA plane).
2. Cine frames are matched in time (the same frame index when both cines have as many frames, else
   the nearest phase ``round(f * n_la / n_sa)``; both are triggered at the R wave) and pooled: up to
   ``max_frames`` frames spread over the cycle, their profiles concatenated per view.
3. The score of ``s`` is the normalised cross-correlation (NCC) of the SA and LA profiles per view,
   averaged over the views weighted by their number of samples. A view constrains the shift along
   its line directly and across it through the anatomy the moved line passes; two or more views at
   an angle pin both components. The best ``s`` is found on a ``coarse_mm`` grid over
   +-``search_mm``, then on a 1 mm grid and a ``fine_mm`` grid, each around the previous best.
4. The estimate is reported as the *correction*: the world vector (LPS mm, in the SA plane) to add to
   the slice's plane origin so that its content lines up with the LA images (``-s`` above; the
   content seen at ``x + s`` really is at ``x``). ``shift_mm`` is its length.

A best coarse shift on the edge of the search square is reported with status ``at search limit``:
the misregistration is at least that large (rerun with a larger ``search_mm``).

``spread_mm`` says how sharp the optimum is: the RMS distance from the best of the coarse
candidates that score within ``SPREAD_NCC`` of it. A flat NCC landscape (slices above the base or
below the apex, lines through lung) gives a large spread and an estimate not to trust.

Assumptions and limits: the LA images are the reference (their own breath-hold errors are folded
into the SA estimates; inconsistent LA views lower ``ncc_after``); only the in-plane component is
measured (a through-plane error changes which anatomy the line cuts, not where); thick slabs blur
both profiles differently, so NCC never reaches 1; flat profiles (a line through lung only) make the
optimum ill-defined, which a low ``ncc_after`` or a small gain over ``ncc_before`` reveals.

Images are sampled on the store's grid through the grid's own plane (``SliceTable.plane``), which
lies in the same 3-D plane as the source plane (same directions, centred on the source image): the
store keeps only the grid pixels, and for them that plane is exact. Lines are therefore the source
geometry's lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import map_coordinates

from .geometry import Plane, plane_intersection

SEARCH_MM = 20.0
COARSE_MM = 3.0
FINE_MM = 0.25
SAMPLE_MM = 1.0
MAX_FRAMES = 16
MIN_SAMPLES = 40  # fewer samples over all views: no estimate
SPREAD_NCC = 0.01  # candidates scoring within this of the best count towards ``spread_mm``


@dataclass
class Cine:
    """One slice's frames on one plane: ``images`` (F, H, W) for frame numbers ``frames`` of ``n_frames``."""

    view: str
    plane: Plane
    images: np.ndarray
    frames: np.ndarray
    n_frames: int
    slice_index: int = 0

    def frame_for(self, phase: float) -> int:
        """Row of ``images`` nearest in time to ``phase`` (0..1 of the cycle)."""
        want = int(round(phase * self.n_frames)) % self.n_frames
        d = np.abs(self.frames - want)
        d = np.minimum(d, self.n_frames - d)  # cyclic
        return int(np.argmin(d))


@dataclass
class SliceEstimate:
    slice_index: int
    status: str  # "ok", "at search limit" (the true shift may be larger), "no LA view", "too few samples"
    correction_world: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))  # add to the origin
    correction_plane: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))  # along row_dir, col_dir
    shift_mm: float = float("nan")
    ncc_before: float = float("nan")
    ncc_after: float = float("nan")
    n_samples: int = 0
    views: tuple[str, ...] = ()
    spread_mm: float = float("nan")  # RMS distance of the coarse candidates within SPREAD_NCC of the best


@dataclass
class _Line:
    view: str
    sa_rc: np.ndarray  # (F * M, 2) SA pixel coordinates of the samples, frames concatenated
    la_values: np.ndarray  # (F * M,) LA intensities
    frame_rows: np.ndarray  # (F * M,) which SA image each sample reads


def _line_samples(sa: Cine, la: Cine, margin_mm: float, sample_mm: float, max_frames: int) -> _Line | None:
    """Samples of ``la``'s trace in ``sa``: where the line lies inside both images (the SA image
    shrunk by ``margin_mm`` so every candidate shift stays inside)."""
    line = plane_intersection(sa.plane, la.plane)
    if line is None:
        return None
    p0, d = line
    h, w = sa.images.shape[1:]
    lh, lw = la.images.shape[1:]
    # parametrise the line by t (mm) around p0; bound t by both rectangles (row/col linear in t)
    lo, hi = -1e5, 1e5
    for plane, shape, margin in ((sa.plane, (h, w), margin_mm), (la.plane, (lh, lw), 0.0)):
        r0, c0, _ = plane.world_to_pixel(p0)
        r1, c1, _ = plane.world_to_pixel(p0 + d)
        for a0, a1, n, sp in ((r0, r1, shape[0], plane.spacing[0]), (c0, c1, shape[1], plane.spacing[1])):
            slope = a1 - a0
            m = margin / sp
            bounds = (m - a0, n - 1 - m - a0)
            if abs(slope) < 1e-12:
                if not bounds[0] <= 0 <= bounds[1]:
                    return None
                continue
            ta, tb = bounds[0] / slope, bounds[1] / slope
            lo, hi = max(lo, min(ta, tb)), min(hi, max(ta, tb))
    if hi - lo < 2 * sample_mm:
        return None
    t = np.arange(lo, hi, sample_mm)
    pts = p0 + t[:, None] * d
    sr, sc, _ = sa.plane.world_to_pixel(pts)
    lr, lc, _ = la.plane.world_to_pixel(pts)
    n_sa = len(sa.frames)
    rows = np.linspace(0, n_sa - 1, min(n_sa, max_frames)).round().astype(int)
    sa_rc, la_vals, frame_rows = [], [], []
    for i in np.unique(rows):
        j = la.frame_for(sa.frames[i] / sa.n_frames)
        la_vals.append(map_coordinates(la.images[j], [lr, lc], order=1, mode="nearest"))
        sa_rc.append(np.stack([sr, sc], axis=1))
        frame_rows.append(np.full(t.size, i))
    return _Line(la.view, np.concatenate(sa_rc), np.concatenate(la_vals), np.concatenate(frame_rows))


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NCC of each row of ``a`` (S, M) with ``b`` (M,)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean()
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum())
    return np.where(den > 0, (a @ b) / np.where(den > 0, den, 1.0), 0.0)


def _scores(sa: Cine, lines: list[_Line], shifts: np.ndarray) -> np.ndarray:
    """Sample-weighted mean NCC over the views for each candidate shift (S, 2) = (along row_dir,
    along col_dir) mm: the SA image read at its line samples moved by the shift."""
    spr, spc = sa.plane.spacing
    d_rc = np.stack([shifts[:, 1] / spr, shifts[:, 0] / spc], axis=1)  # (S, 2) pixels
    total = np.zeros(len(shifts))
    weight = 0
    for ln in lines:
        vals = np.empty((len(shifts), len(ln.la_values)))
        for i in np.unique(ln.frame_rows):
            sel = ln.frame_rows == i
            rc = ln.sa_rc[sel]
            r = (rc[None, :, 0] + d_rc[:, None, 0]).ravel()
            c = (rc[None, :, 1] + d_rc[:, None, 1]).ravel()
            vals[:, sel] = map_coordinates(sa.images[i], [r, c], order=1, mode="nearest").reshape(len(shifts), -1)
        total += _ncc(vals, ln.la_values) * len(ln.la_values)
        weight += len(ln.la_values)
    return total / max(weight, 1)


def _grid(centre: np.ndarray, half: float, step: float) -> np.ndarray:
    """A square grid of shifts around ``centre``, symmetric, reaching at least ``half``."""
    k = step * np.arange(-np.ceil(half / step - 1e-9), np.ceil(half / step - 1e-9) + 1)
    a, b = np.meshgrid(centre[0] + k, centre[1] + k, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def estimate_slice(sa: Cine, las: list[Cine], *, search_mm: float = SEARCH_MM, coarse_mm: float = COARSE_MM,
                   fine_mm: float = FINE_MM, sample_mm: float = SAMPLE_MM, max_frames: int = MAX_FRAMES) -> SliceEstimate:
    """The in-plane misregistration of one SA slice against the LA cines ``las`` (module docstring)."""
    if not las:
        return SliceEstimate(sa.slice_index, "no LA view")
    lines = [ln for la in las if (ln := _line_samples(sa, la, search_mm + 2 * coarse_mm, sample_mm, max_frames))]
    n = sum(len(ln.la_values) for ln in lines)
    if n < MIN_SAMPLES or not lines:
        return SliceEstimate(sa.slice_index, "too few samples", n_samples=n, views=tuple(ln.view for ln in lines))
    best, half = np.zeros(2), search_mm
    spread = float("nan")
    for step in (coarse_mm, max(fine_mm, coarse_mm / 3.0), fine_mm):  # coarse to fine, each around the last best
        cand = _grid(best, half, step)
        score = _scores(sa, lines, cand)
        best, top = cand[int(np.argmax(score))], float(score.max())
        if np.isnan(spread):  # how far the near-best coarse candidates lie from the best: ambiguity
            near = cand[score >= top - SPREAD_NCC]
            spread = float(np.sqrt(np.mean(np.sum((near - best) ** 2, axis=1))))
            at_limit = bool(np.abs(best).max() >= np.abs(cand).max() - 1e-9)
        half = step
        if step == fine_mm:
            break
    s = best
    before = float(_scores(sa, lines, np.zeros((1, 2)))[0])
    corr_plane = -s
    corr_world = corr_plane[0] * sa.plane.row_dir + corr_plane[1] * sa.plane.col_dir
    return SliceEstimate(
        sa.slice_index, "at search limit" if at_limit else "ok", corr_world, corr_plane, float(np.hypot(*corr_plane)),
        before, top, n, tuple(ln.view for ln in lines), spread,
    )


def estimate_subject(sa_slices: list[Cine], las: list[Cine], **kw) -> list[SliceEstimate]:
    """``estimate_slice`` for every SA slice of one subject."""
    return [estimate_slice(sa, las, **kw) for sa in sa_slices]


def line_profiles(sa: Cine, la: Cine, correction_plane=(0.0, 0.0), sample_mm: float = SAMPLE_MM):
    """(t mm, SA profile, LA profile) along the trace at the SA cine's first frame, the SA image read
    with its plane moved by ``correction_plane`` (for pictures); None when the planes miss."""
    line = _line_samples(sa, la, 0.0, sample_mm, 1)
    if line is None:
        return None
    cr, cc = correction_plane
    spr, spc = sa.plane.spacing
    rc = line.sa_rc - np.array([cc / spr, cr / spc])[None, :]  # content at x - correction is seen at x
    sa_vals = map_coordinates(sa.images[0], [rc[:, 0], rc[:, 1]], order=1, mode="nearest")
    return np.arange(len(sa_vals)) * sample_mm, sa_vals, line.la_values
