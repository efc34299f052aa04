"""Anatomical position prediction from scanner geometry (Bai et al., MICCAI 2019).

Cardiac MR is planned on the heart: the long-axis (LA) planes (2-, 3- and 4-chamber) pass through
the LV long axis, so their traces in a short-axis (SA) slice cross near the LV centre. The
geometry is in every DICOM header, so it gives labels for free. Targets (``Config.target``):

``boxes`` (default; the paper's nine positions + background as a 10-way segmentation). The paper
gives no box sizes, so this is our definition. ``c`` is the crossing of the 2ch and 4ch traces;
``u`` and ``v`` are the unit directions (mm) of the 4ch and 2ch traces, oriented by a fixed rule in
patient coordinates (LPS) so that a label means the same wall in every subject. A subject without
one of them gets its frame from any two LA views that cross at ``min_cross_deg`` or more, or, with a
single usable view (M&Ms-2: SA + 4ch), from a virtual second plane through the SA image centre
(``single_view``; ``position_geometry`` says how and how far it lands from the true crossing):

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
planes"). A slice needs one of ``views``; the channels of the views a subject lacks are zero and
``target_views`` (1 present, 0 absent) leaves them out of the loss and metrics.

Geometry QC (``cardiossl cohort qc``) estimates each SA slice's in-plane misregistration against the
LA images. ``plane_correction: qc`` moves the slice's plane by that estimate before the traces are
cut; ``max_qc_shift_mm`` skips subjects whose median misregistration is larger. Both read the
estimates the dataset attaches to each sample (``qc_correction``, ``qc_subject_shift_mm``).

Why a slice gets no target is ``PositionPretext.reason(meta)`` (``cardiossl cohort info`` counts them).

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
from .base import Pretext, PretextConfig, TargetSpec, image_hw, overlay_classes
from .position_geometry import (  # noqa: F401  (ANTERIOR, LATERAL, trace: the public geometry helpers)
    ANTERIOR,
    LATERAL,
    MIN_CROSS_DEG,
    NO_LA,
    OUTSIDE,
    PARALLEL,
    TRACES_OUTSIDE,
    SliceGeometry,
    paint_boxes,
    segment_inside,
    trace,
)

N_BOXES = 9
VIEW_COLORS = {"2ch": "tab:orange", "3ch": "tab:green", "4ch": "deepskyblue"}
NOT_SA = "not an SA slice"
NO_STACK_POSITION = "no stack position"
NO_QC = "no QC estimate (run cardiossl cohort qc)"
QC_ABOVE = "QC shift above max_qc_shift_mm"


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
    min_cross_deg: float = Field(
        MIN_CROSS_DEG, gt=0, le=90, description="boxes: two traces crossing at less than this fix no centre"
    )
    single_view: bool = Field(
        True, description="boxes: a subject with one usable LA view gets a virtual second plane through the "
        "SA image centre (else no target)"
    )
    plane_correction: Literal["none", "qc"] = Field(
        "none", description="qc: move each SA plane by the geometry QC's misregistration estimate"
    )
    max_qc_shift_mm: float | None = Field(
        None, gt=0, description="skip subjects whose QC median misregistration exceeds this (mm)"
    )

    @field_validator("views")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"views must not repeat, got {list(v)}")
        return v


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


class PositionPretext(Pretext):
    """Anatomical position from scanner geometry (Bai et al., MICCAI 2019): boxes | lines | slice_location."""

    name: ClassVar[str] = "position"
    Config: ClassVar[type[PositionConfig]] = PositionConfig
    target_reads_image: ClassVar[bool] = False  # targets from the plane alone
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
        return tuple(self.config.views) if self.config.target == "lines" else LA_VIEWS

    @property
    def needed_views(self) -> tuple[str, ...]:
        """The LA views a target can use (any one of them for lines, any two or one for boxes)."""
        return self._geo_views if self.config.target != "slice_location" else ()

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ("target_views",) if self.config.target == "lines" else ()

    @property
    def uses_decoder(self) -> bool:
        return self.config.target != "slice_location"

    # --- geometry ---------------------------------------------------------------------------------
    def _slice_planes(self, meta: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """The slice's plane vector and world image centre, moved by the QC estimate when configured."""
        plane = np.asarray(meta["plane"], dtype=np.float64)
        centre = meta.get("image_centre")
        centre = None if centre is None else np.asarray(centre, dtype=np.float64)
        if self.config.plane_correction == "qc":
            corr = np.asarray(meta["qc_correction"], dtype=np.float64).reshape(3)
            plane = plane.copy()
            plane[:3] += corr
            centre = None if centre is None else centre + corr
        return plane, centre

    def _key(self, meta: dict) -> bytes:
        """Cache key: what the geometry depends on (the image centre only through the boxes fallback)."""
        if self.config.plane_correction == "qc":
            plane, centre = self._slice_planes(meta)
        else:
            plane, centre = np.asarray(meta["plane"], dtype=np.float64), meta.get("image_centre")
        key = plane.tobytes() + np.asarray(meta["la_planes"], dtype=np.float64).tobytes()
        if centre is not None and self.config.target == "boxes":
            key += np.asarray(centre, dtype=np.float64).tobytes()
        return key

    def geometry(self, meta: dict, key: bytes | None = None) -> SliceGeometry:
        """The (cached) traces and box frame of the slice described by ``meta``."""
        key = self._key(meta) if key is None else key
        geo = self._cache.get(key)
        if geo is None:
            plane, centre = self._slice_planes(meta)
            kw = dict(image_centre=centre, min_cross_deg=self.config.min_cross_deg, single_view=self.config.single_view)
            if self.config.target == "boxes":  # the 3ch trace only matters when 2ch x 4ch makes no frame
                geo = SliceGeometry(plane, meta["la_planes"], ("2ch", "4ch"), **kw)
                if geo.frame != "2ch x 4ch" and np.isfinite(np.asarray(meta["la_planes"], dtype=np.float64)[1, 0]):
                    geo = SliceGeometry(plane, meta["la_planes"], LA_VIEWS, **kw)
            else:
                geo = SliceGeometry(plane, meta["la_planes"], self._geo_views, **kw)
            self._cache[key] = geo
            if len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        return geo

    def _why_not(self, geo: SliceGeometry) -> str | None:
        """Why ``geo`` makes no target (no image bounds checked)."""
        if self.config.target == "boxes":
            return None if geo.center is not None else geo.reason
        if any(v in geo.traces for v in self.config.views):
            return None
        return geo.reason if geo.reason in (NO_LA, PARALLEL) or not geo.ok else PARALLEL

    def reason(self, meta: dict) -> str | None:
        """None when a target can be made for this slice; else why not, from its metadata alone.

        With ``image_centre`` in ``meta`` (``CohortDataset`` samples) a box centre or every trace
        outside the stored image is refused too."""
        if meta.get("view", "sa") != "sa":
            return NOT_SA
        if self.config.target == "slice_location":
            return None if _finite(meta.get("stack_position")) else NO_STACK_POSITION
        if self.config.plane_correction == "qc" or self.config.max_qc_shift_mm is not None:
            corr = meta.get("qc_correction")
            if corr is None or not np.all(np.isfinite(np.asarray(corr, dtype=np.float64))):
                return NO_QC
            limit = self.config.max_qc_shift_mm
            if limit is not None and not float(meta.get("qc_subject_shift_mm", np.inf)) <= limit:
                return QC_ABOVE
        try:
            geo = self.geometry(meta)
        except (KeyError, ValueError, TypeError):
            return "no plane geometry in the sample"
        why = self._why_not(geo)
        if why is not None or meta.get("image_centre") is None:
            return why
        plane, centre = self._slice_planes(meta)
        centre_px = SliceGeometry.pixel_of(plane, centre)
        if self.config.target == "boxes":
            return None if geo.inside(centre_px) else OUTSIDE
        if any(v in geo.traces and segment_inside(geo, v, centre_px) for v in self.config.views):
            return None
        return TRACES_OUTSIDE

    def accepts(self, meta: dict) -> bool:
        return self.reason(meta) is None

    def _refuse(self, sample: dict, why: str | None = None) -> ValueError:
        where = (
            f"subject {sample.get('subject_id', '?')}, view {sample.get('view', '?')}, "
            f"slice {sample.get('slice_index', '?')}"
        )
        return ValueError(
            f"position ({self.config.target}): {where}: cannot make a target ({why or self.reason(sample)}); "
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
            spec["target_views"] = TargetSpec((len(self.config.views),), np.dtype(np.float32), 0.0, 1.0)
        else:
            spec["target"] = TargetSpec((1,), np.dtype(np.float32), 0.0, 1.0)
        return spec

    def make_target(self, sample: dict, rng: np.random.Generator) -> dict:
        """Deterministic given the sample (``rng`` is unused: the target comes from geometry)."""
        out = dict(sample)
        out["input"] = np.asarray(sample["image"], dtype=np.float32)
        t = self.config.target
        if t == "slice_location":
            if not _finite(sample.get("stack_position")) or sample.get("view", "sa") != "sa":
                raise self._refuse(sample)
            out["target"] = np.array([min(1.0, max(0.0, float(sample["stack_position"])))], dtype=np.float32)
            return out
        if sample.get("view", "sa") != "sa":
            raise self._refuse(sample, NOT_SA)
        try:
            key = self._key(sample)
            geo = self.geometry(sample, key)
        except (KeyError, ValueError, TypeError):
            raise self._refuse(sample) from None
        why = self._why_not(geo)
        if why is not None:
            raise self._refuse(sample, why)
        shape = image_hw(sample)
        if t == "boxes":
            out["target"] = paint_boxes(shape, geo.box_bounds(shape, self.config.distance_mm, self.config.box_mm))
        else:
            out["target"], out["target_views"] = self._cached_heatmaps(key, geo, shape)
        return out

    def _cached_heatmaps(self, key: bytes, geo: SliceGeometry, shape) -> tuple[np.ndarray, np.ndarray]:
        hkey = (key, shape)
        entry = self._heatmaps.get(hkey)
        if entry is None:
            maps = self.line_heatmaps(geo, shape)
            present = np.array([v in geo.traces for v in self.config.views], dtype=np.float32)
            entry = self._heatmaps[hkey] = (maps, present)
            self._heatmap_bytes += maps.nbytes
            while self._heatmap_bytes > self._HEATMAP_CACHE_BYTES and len(self._heatmaps) > 1:
                self._heatmap_bytes -= self._heatmaps.popitem(last=False)[1][0].nbytes
        return entry[0].copy(), entry[1].copy()  # callers (augmentations) may write into their target

    def line_heatmaps(self, geo: SliceGeometry, shape) -> np.ndarray:
        """[V, H, W] float32: exp(-dist^2 / 2 sigma^2), dist in mm from each view's trace; zeros
        for a view without a trace."""
        h, w = shape
        sp = geo.spacing
        views = [v for v in self.config.views if v in geo.traces]
        out = np.zeros((len(self.config.views), h, w), dtype=np.float32)
        if not views:
            return out
        pts = np.stack([geo.traces[v][0] for v in views]) * sp  # [V, 2] mm
        dirs = np.stack([geo.traces[v][1] for v in views])  # [V, 2] mm, unit
        normals = np.stack([-dirs[:, 1], dirs[:, 0]], axis=1)
        inv = 1.0 / (math.sqrt(2.0) * self.config.sigma_mm)
        a = ((np.arange(h) * sp[0])[None, :] - pts[:, :1]) * normals[:, :1] * inv  # [V, H]
        b = ((np.arange(w) * sp[1])[None, :] - pts[:, 1:]) * normals[:, 1:] * inv  # [V, W]
        d = a.astype(np.float32)[:, :, None] + b.astype(np.float32)[:, None, :]
        np.square(d, out=d)
        np.negative(d, out=d)
        np.exp(d, out=d)
        if len(views) == len(self.config.views):
            return d
        out[[self.config.views.index(v) for v in views]] = d
        return out

    # --- model ---------------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module) -> nn.Module:
        from ..backbones import HEADS

        t = self.config.target
        if t == "boxes":
            return HEADS.get("segmentation")(backbone.decoder.out_channels, N_BOXES + 1)
        if t == "lines":
            return HEADS.get("segmentation")(backbone.decoder.out_channels, len(self.config.views))
        return HEADS.get("classification")(backbone.encoder.channels[-1], 1)

    @staticmethod
    def _masked_mse(output: torch.Tensor, batch: dict) -> torch.Tensor:
        """Mean squared error over the channels of the views each sample has (``target_views``)."""
        err = (output - batch["target"].to(output.dtype)).square()
        weights = batch.get("target_views")
        if weights is None:
            return err.mean()
        w = weights.to(output.dtype)[:, :, None, None]
        return (err * w).sum() / (w.sum() * err.shape[-2] * err.shape[-1]).clamp_min(1.0)

    def loss(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["target"]
        if self.config.target == "boxes":
            loss = F.cross_entropy(output, target.long())
        elif self.config.target == "lines":
            loss = self._masked_mse(output, batch)
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
            return {"mse": self._masked_mse(output, batch).item()}
        return {"mae": (output - target.to(output.dtype)).abs().mean().item()}

    # --- pictures --------------------------------------------------------------------------------------
    def annotations(self, sample: dict) -> dict[str, np.ndarray]:
        """trace_points [3, 2, 2]: per LA view (2ch, 3ch, 4ch) the two image-border end points (row, col);
        cross_point [2]: the box centre (the 2ch x 4ch crossing, or the fallback's); box_centres [9, 2]
        (label = index + 1); axes_mm [2, 2]: u and v (mm, row/col); virtual_points [2, 2]: end points
        of the single-view fallback's virtual trace. NaN where absent."""
        shape = image_hw(sample)
        out = {
            "trace_views": np.array(LA_VIEWS),
            "trace_points": np.full((len(LA_VIEWS), 2, 2), np.nan),
            "cross_point": np.full(2, np.nan),
            "box_centres": np.full((N_BOXES, 2), np.nan),
            "axes_mm": np.full((2, 2), np.nan),
            "virtual_points": np.full((2, 2), np.nan),
        }
        if not ("plane" in sample and "la_planes" in sample) or sample.get("view", "sa") != "sa":
            return out
        try:
            plane, centre = self._slice_planes(sample)
            geo = SliceGeometry(plane, sample["la_planes"], image_centre=centre,  # every view, for the picture
                                min_cross_deg=self.config.min_cross_deg, single_view=self.config.single_view)
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
        if geo.virtual is not None:
            seg = line_segment_in_image(geo.center, np.asarray(geo.virtual) / geo.spacing, shape)
            if seg is not None:
                out["virtual_points"] = np.stack(seg)
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
            overlay_classes(ax, target, alpha=0.3)
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
        if t == "boxes" and np.isfinite(ann["virtual_points"][0, 0]):
            v = ann["virtual_points"]
            ax.plot(v[:, 1], v[:, 0], color="white", linewidth=0.9, linestyle=":", label="virtual")
        if np.isfinite(ann["cross_point"][0]):
            ax.plot(ann["cross_point"][1], ann["cross_point"][0], "+", color="red", markersize=6)
        h, w = img.shape
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)


