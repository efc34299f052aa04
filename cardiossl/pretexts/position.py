"""Anatomical position prediction from scanner geometry (Bai et al., MICCAI 2019).

Cardiac MR is planned on the heart: the long-axis (LA) planes (2-, 3- and 4-chamber) pass through
the LV long axis, so their traces in a short-axis (SA) slice cross near the LV centre. The
geometry is in every DICOM header, so it gives labels for free. Targets (``Config.target``):

``boxes`` (default; the paper's nine positions + background as a 10-way segmentation). The paper
gives no box sizes, so this is our definition. ``c`` is the crossing of the 2ch and 4ch traces;
``u`` and ``v`` are the unit directions (mm) of the 4ch and 2ch traces, oriented by a fixed rule in
patient coordinates (LPS) so that a label means the same wall in every subject:

* ``u`` (4ch trace, septum -> lateral wall) points to the side of patient left + posterior,
  ``(1, 1, 0)/sqrt 2``, where the LV free wall lies;
* ``v`` (2ch trace, inferior -> anterior wall) points to the side of anterior + superior,
  ``(0, -1, 1)/sqrt 2``.

Both reference directions lie close to where the traces point in a standard plan, so the sign
choice is far from its tipping point. Box ``(i, j)``, i, j in {-1, 0, 1}, is an image-axis-aligned
square of side ``box_mm`` centred at ``c + i*d*u + j*d*v`` (``d = distance_mm``), labelled
``1 + 3*(j+1) + (i+1)``::

    7 anteroseptal   8 anterior   9 anterolateral
    4 septal         5 centre     6 lateral
    1 inferoseptal   2 inferior   3 inferolateral

(names after the AHA segments the boxes fall on in a standard plan). Defaults: ``distance_mm=30``
and ``box_mm=20``. The LV cavity is ~50 mm across at end-diastole and the wall ~10 mm thick, so the
centre box lies inside the cavity, the outer boxes 20-40 mm from the centre straddle the walls,
and with ``box_mm <= distance_mm / sqrt 2`` boxes never touch, whatever the traces' angle to the
image axes, as long as the 2ch and 4ch traces cross at 60-120 degrees (standard plans: ~90), so a
background gap keeps neighbouring labels apart. Where boxes overlap (larger boxes, traces crossing
at a sharper angle) the box nearer the centre wins. Millimetres are converted to pixels
with the slice's own (row, column) spacing, so non-square pixels give the same boxes in mm.

``lines``: one Gaussian heatmap per LA view (``views``), ``exp(-dist^2 / 2 sigma^2)`` of the
distance in mm to that view's trace, regressed (Zhang et al., MedIA 2024, "anatomy-oriented imaging
planes").

``slice_location``: the slice's normalised position along the SA stack (0 base, 1 apex), regressed
from the pooled bottleneck, for cohorts without LA views (ACDC, M&Ms-2 SA only).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..datasets.geometry import line_segment_in_image
from ..datasets.records import LA_VIEWS
from .base import Pretext, PretextConfig, TargetSpec, image_hw

LATERAL = np.array([1.0, 1.0, 0.0]) / math.sqrt(2.0)  # LPS: patient left + posterior
ANTERIOR = np.array([0.0, -1.0, 1.0]) / math.sqrt(2.0)  # LPS: anterior + superior
# Tie-breakers (a trace exactly perpendicular to the first reference) make the rule total.
U_REFERENCES = (LATERAL, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
V_REFERENCES = (ANTERIOR, np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
MIN_PLANE_ANGLE_DEG = 10.0  # an LA plane within 10 degrees of the SA plane has no usable trace
N_BOXES = 9
VIEW_COLORS = {"2ch": "tab:orange", "3ch": "tab:green", "4ch": "deepskyblue"}


class PositionConfig(PretextConfig):
    target: Literal["boxes", "lines", "slice_location"] = Field(
        "boxes", description="boxes: 9 positions + background; lines: trace heatmaps; slice_location: stack position"
    )
    distance_mm: float = Field(30.0, gt=0, le=200, description="box centre spacing d along the traces (mm)")
    box_mm: float = Field(20.0, gt=0, le=200, description="side of each square box (mm)")
    sigma_mm: float = Field(4.0, gt=0, le=50, description="Gaussian width of the trace heatmaps (mm)")
    views: tuple[Literal["2ch", "3ch", "4ch"], ...] = Field(
        ("2ch", "3ch", "4ch"), min_length=1, description="LA views whose traces the lines target draws"
    )

    @field_validator("views")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"views must not repeat, got {list(v)}")
        return v


# --- geometry -----------------------------------------------------------------------------------
# Plain Python floats on 11-float plane vectors: this runs per sample in the data loader, and for
# 3-vectors Python arithmetic is several times faster than numpy calls (np.cross alone is ~10 us).
_SIN_MIN = math.sin(math.radians(MIN_PLANE_ANGLE_DEG))


def _dot(a, b) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a, b) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _unit(a) -> tuple[float, float, float] | None:
    n = math.sqrt(_dot(a, a))
    if not n > 1e-9:  # also False for NaN
        return None
    return (a[0] / n, a[1] / n, a[2] / n)


class _PlaneF:
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


def _trace_f(sl: _PlaneF, other: _PlaneF):
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
    sl, other = _PlaneF(slice_vec), _PlaneF(other_vec)
    if not (sl.ok and other.ok):
        return None
    t = _trace_f(sl, other)
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


class SliceGeometry:
    """Traces of the LA planes in one SA slice, and the box frame (c, u, v) when 2ch and 4ch exist.

    ``ok`` is False when the slice plane itself is malformed; an LA plane that is absent (NaN row),
    malformed or within MIN_PLANE_ANGLE_DEG of the slice simply has no trace.
    """

    __slots__ = ("ok", "spacing", "traces", "center", "u", "v", "_boxes")

    def __init__(self, plane_vec, la_planes, views=LA_VIEWS) -> None:
        sl = _PlaneF(plane_vec)
        la = np.asarray(la_planes, dtype=np.float64).reshape(len(LA_VIEWS), 11).tolist()
        self.ok = sl.ok
        self.spacing = np.array([sl.spr, sl.spc])
        # view -> (point (row, col) px, direction (row, col) mm, world direction), as float tuples
        self.traces: dict[str, tuple[tuple, tuple, tuple]] = {}
        self.center = self.u = self.v = None
        self._boxes: dict = {}
        if not sl.ok:
            return
        raw = self.traces
        for k, view in enumerate(LA_VIEWS):
            if view in views and math.isfinite(la[k][0]):
                other = _PlaneF(la[k])
                if other.ok:
                    t = _trace_f(sl, other)
                    if t is not None:
                        raw[view] = t
        if "2ch" in raw and "4ch" in raw:
            p4, u, w4 = raw["4ch"]
            p2, v, w2 = raw["2ch"]
            if orient_sign(w4, U_REFERENCES) < 0:
                u = (-u[0], -u[1])
            if orient_sign(w2, V_REFERENCES) < 0:
                v = (-v[0], -v[1])
            c = cross_mm(p4, u, p2, v, (sl.spr, sl.spc))
            if c is not None:
                self.center, self.u, self.v = np.array(c), np.array(u), np.array(v)

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


class PositionPretext(Pretext):
    """Anatomical position from scanner geometry (Bai et al., MICCAI 2019): boxes | lines | slice_location."""

    name: ClassVar[str] = "position"
    Config: ClassVar[type[PositionConfig]] = PositionConfig
    config: PositionConfig
    _CACHE_SIZE = 4096  # cine frames of one slice share geometry: compute it once per plane set
    _HEATMAP_CACHE_BYTES = 64 << 20  # ... and, for ``lines``, the same heatmaps

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._cache: OrderedDict[bytes, SliceGeometry] = OrderedDict()
        self._heatmaps: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._heatmap_bytes = 0

    def __getstate__(self):
        # Caches are per process: ship the config only (DataLoader workers, Ray).
        state = self.__dict__.copy()
        state["_cache"], state["_heatmaps"], state["_heatmap_bytes"] = OrderedDict(), OrderedDict(), 0
        return state

    @classmethod
    def variants(cls) -> list[dict]:
        return [{"target": "boxes"}, {"target": "lines"}, {"target": "slice_location"}]

    @property
    def _geo_views(self) -> tuple[str, ...]:
        return self.needed_views or LA_VIEWS

    @property
    def needed_views(self) -> tuple[str, ...]:
        t = self.config.target
        return ("2ch", "4ch") if t == "boxes" else tuple(self.config.views) if t == "lines" else ()

    @property
    def uses_decoder(self) -> bool:
        return self.config.target != "slice_location"

    # --- geometry ---------------------------------------------------------------------------------
    @staticmethod
    def _key(meta: dict) -> bytes:
        return (
            np.asarray(meta["plane"], dtype=np.float64).tobytes()
            + np.asarray(meta["la_planes"], dtype=np.float64).tobytes()
        )

    def geometry(self, meta: dict, key: bytes | None = None) -> SliceGeometry:
        """The (cached) traces and box frame of the slice described by ``meta``."""
        key = self._key(meta) if key is None else key
        geo = self._cache.get(key)
        if geo is None:
            # Only the traces this target needs (boxes: 2ch and 4ch); pictures compute all.
            geo = SliceGeometry(meta["plane"], meta["la_planes"], self._geo_views)
            self._cache[key] = geo
            if len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        return geo

    def _usable(self, geo: SliceGeometry) -> bool:
        if not geo.ok:
            return False
        if self.config.target == "boxes":
            return geo.center is not None
        return all(v in geo.traces for v in self.needed_views)

    def accepts(self, meta: dict) -> bool:
        if meta.get("view", "sa") != "sa":
            return False
        if self.config.target == "slice_location":
            sp = meta.get("stack_position")
            try:
                return sp is not None and math.isfinite(float(sp))
            except (TypeError, ValueError):
                return False
        try:
            return self._usable(self.geometry(meta))
        except (KeyError, ValueError, TypeError):
            return False

    def _refuse(self, sample: dict) -> ValueError:
        where = (
            f"subject {sample.get('subject_id', '?')}, view {sample.get('view', '?')}, "
            f"slice {sample.get('slice_index', '?')}"
        )
        need = (
            "a finite stack_position"
            if self.config.target == "slice_location"
            else f"an SA slice with the {'/'.join(self.needed_views)} planes, not parallel to it"
        )
        return ValueError(
            f"position ({self.config.target}): {where}: cannot make a target, it needs {need}; "
            "pass CohortDataset(filter=pretext.accepts) so such slices are skipped"
        )

    # --- targets ------------------------------------------------------------------------------------
    def target_spec(self, image_shape):
        h, w = image_shape
        spec = {"input": TargetSpec((1, h, w), np.dtype(np.float32))}
        t = self.config.target
        if t == "boxes":
            spec["target"] = TargetSpec((h, w), np.dtype(np.uint8), 0, N_BOXES)
        elif t == "lines":
            spec["target"] = TargetSpec((len(self.config.views), h, w), np.dtype(np.float32), 0.0, 1.0)
        else:
            spec["target"] = TargetSpec((1,), np.dtype(np.float32), 0.0, 1.0)
        return spec

    def make_target(self, sample: dict, rng: np.random.Generator) -> dict:
        """Deterministic given the sample (``rng`` is unused: the target comes from geometry)."""
        out = dict(sample)
        out["input"] = np.asarray(sample["image"], dtype=np.float32)
        t = self.config.target
        if t == "slice_location":
            if not self.accepts(sample):
                raise self._refuse(sample)
            out["target"] = np.array([min(1.0, max(0.0, float(sample["stack_position"])))], dtype=np.float32)
            return out
        if sample.get("view", "sa") != "sa":
            raise self._refuse(sample)
        try:
            key = self._key(sample)
            geo = self.geometry(sample, key)
        except (KeyError, ValueError, TypeError):
            raise self._refuse(sample) from None
        if not self._usable(geo):
            raise self._refuse(sample)
        shape = image_hw(sample)
        if t == "boxes":
            out["target"] = paint_boxes(shape, geo.box_bounds(shape, self.config.distance_mm, self.config.box_mm))
        else:
            out["target"] = self._cached_heatmaps(key, geo, shape)
        return out

    def _cached_heatmaps(self, key: bytes, geo: SliceGeometry, shape) -> np.ndarray:
        hkey = (key, shape)
        maps = self._heatmaps.get(hkey)
        if maps is None:
            maps = self.line_heatmaps(geo, shape)
            self._heatmaps[hkey] = maps
            self._heatmap_bytes += maps.nbytes
            while self._heatmap_bytes > self._HEATMAP_CACHE_BYTES and len(self._heatmaps) > 1:
                self._heatmap_bytes -= self._heatmaps.popitem(last=False)[1].nbytes
        return maps.copy()  # callers (augmentations) may write into their target

    def line_heatmaps(self, geo: SliceGeometry, shape) -> np.ndarray:
        """[V, H, W] float32: exp(-dist^2 / 2 sigma^2), dist in mm from each view's trace."""
        h, w = shape
        sp = geo.spacing
        pts = np.stack([geo.traces[v][0] for v in self.config.views]) * sp  # [V, 2] mm
        dirs = np.stack([geo.traces[v][1] for v in self.config.views])  # [V, 2] mm, unit
        normals = np.stack([-dirs[:, 1], dirs[:, 0]], axis=1)
        inv = 1.0 / (math.sqrt(2.0) * self.config.sigma_mm)
        a = ((np.arange(h) * sp[0])[None, :] - pts[:, :1]) * normals[:, :1] * inv  # [V, H]
        b = ((np.arange(w) * sp[1])[None, :] - pts[:, 1:]) * normals[:, 1:] * inv  # [V, W]
        d = a.astype(np.float32)[:, :, None] + b.astype(np.float32)[:, None, :]
        np.square(d, out=d)
        np.negative(d, out=d)
        return np.exp(d, out=d)

    # --- model ---------------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module) -> nn.Module:
        from ..backbones import HEADS

        t = self.config.target
        if t == "boxes":
            return HEADS.get("segmentation")(backbone.decoder.out_channels, N_BOXES + 1)
        if t == "lines":
            return HEADS.get("segmentation")(backbone.decoder.out_channels, len(self.config.views))
        return HEADS.get("classification")(backbone.encoder.channels[-1], 1)

    def loss(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["target"]
        if self.config.target == "boxes":
            loss = F.cross_entropy(output, target.long())
        else:
            loss = F.mse_loss(output, target.to(output.dtype))
        return {"loss": loss}

    @torch.no_grad()
    def metrics(self, output: torch.Tensor, batch: dict) -> dict[str, float]:
        target = batch["target"]
        t = self.config.target
        if t == "boxes":
            pred = output.argmax(1)
            target = target.long()
            ious = []
            for k in range(1, N_BOXES + 1):
                p, g = pred == k, target == k
                union = (p | g).sum()
                if union > 0:
                    ious.append(((p & g).sum() / union).item())
            return {
                "pixel_accuracy": (pred == target).float().mean().item(),
                "mean_iou": float(np.mean(ious)) if ious else float("nan"),
            }
        if t == "lines":
            return {"mse": F.mse_loss(output, target.to(output.dtype)).item()}
        return {"mae": (output - target.to(output.dtype)).abs().mean().item()}

    # --- pictures --------------------------------------------------------------------------------------
    def annotations(self, sample: dict) -> dict[str, np.ndarray]:
        """trace_points [3, 2, 2]: per LA view (2ch, 3ch, 4ch) the two image-border end points (row, col);
        cross_point [2]: crossing of the 2ch and 4ch traces; box_centres [9, 2] (label = index + 1);
        axes_mm [2, 2]: u and v (mm, row/col). NaN where absent."""
        shape = image_hw(sample)
        out = {
            "trace_views": np.array(LA_VIEWS),
            "trace_points": np.full((len(LA_VIEWS), 2, 2), np.nan),
            "cross_point": np.full(2, np.nan),
            "box_centres": np.full((N_BOXES, 2), np.nan),
            "axes_mm": np.full((2, 2), np.nan),
        }
        if not ("plane" in sample and "la_planes" in sample) or sample.get("view", "sa") != "sa":
            return out
        try:
            geo = SliceGeometry(sample["plane"], sample["la_planes"])  # every view, for the picture
        except (KeyError, ValueError, TypeError):
            return out
        if not geo.ok:
            return out
        for k, view in enumerate(LA_VIEWS):
            if view in geo.traces:
                p, d_mm, _ = geo.traces[view]
                seg = line_segment_in_image(np.asarray(p), np.asarray(d_mm) / geo.spacing, shape)
                if seg is not None:
                    out["trace_points"][k] = np.stack(seg)
        if geo.center is not None:
            out["cross_point"] = geo.center.copy()
            out["box_centres"] = geo.box_centres(self.config.distance_mm)
            out["axes_mm"] = np.stack([geo.u, geo.v])
        return out

    def draw(self, ax, sample: dict) -> None:
        from matplotlib.patches import Rectangle

        img = np.asarray(sample.get("input", sample["image"]))[0]
        ax.imshow(img, cmap="gray", interpolation="nearest")
        t = self.config.target
        target = sample.get("target")
        if t == "slice_location":
            if target is not None:
                ax.set_xlabel(f"stack position {float(np.asarray(target)[0]):.2f}", fontsize=7)
            return
        ann = self.annotations(sample)
        if t == "lines" and target is not None:
            rgba = np.zeros(img.shape + (4,))
            import matplotlib.colors as mcolors

            for k, view in enumerate(self.config.views):
                rgba[..., :3] += np.asarray(target)[k][..., None] * np.array(mcolors.to_rgb(VIEW_COLORS[view]))
                rgba[..., 3] = np.maximum(rgba[..., 3], 0.8 * np.asarray(target)[k])
            ax.imshow(np.clip(rgba, 0, 1), interpolation="nearest")
        if t == "boxes" and target is not None:
            lab = np.asarray(target)
            ax.imshow(np.ma.masked_equal(lab, 0), cmap="tab10", vmin=0.5, vmax=10.5, alpha=0.3,
                      interpolation="nearest")
        if t == "boxes" and target is not None and np.isfinite(ann["cross_point"][0]):
            geo = self.geometry(sample)
            half = self.config.box_mm / 2.0 / geo.spacing
            for k, (r, c) in enumerate(ann["box_centres"]):
                ax.add_patch(
                    Rectangle(
                        (c - half[1], r - half[0]), 2 * half[1], 2 * half[0],
                        fill=False, edgecolor="yellow" if k != 4 else "red", linewidth=0.8,
                    )
                )
                ax.text(c, r, str(k + 1), color="yellow", fontsize=6, ha="center", va="center")
        for k, view in enumerate(LA_VIEWS):
            seg = ann["trace_points"][k]
            if t == "lines" and view not in self.config.views:
                continue
            if np.isfinite(seg[0, 0]):
                ax.plot(seg[:, 1], seg[:, 0], color=VIEW_COLORS[view], linewidth=0.9, label=view,
                        linestyle="-" if t == "boxes" else "--")
        if np.isfinite(ann["cross_point"][0]):
            ax.plot(ann["cross_point"][1], ann["cross_point"][0], "+", color="red", markersize=6)
        h, w = img.shape
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)


