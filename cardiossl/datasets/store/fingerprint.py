"""The cohort fingerprint: what data a run saw, recorded beside the decisions derived from it.

As nnU-Net records a dataset fingerprint (Isensee et al., Nat. Methods 2021): subject and slice
counts, per-view source spacings and shapes, the SA slice gap, pooled intensity statistics.
Computed from the slice table and the per-part intensity statistics alone (no image is read).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..geometry import Plane
from ..records import VIEWS
from .layout import SCHEMA_VERSION


def compute_fingerprint(t, part_stats: Iterable[dict], grid_size: int, spacing_mm: float) -> dict:
    """Spacings, shapes, intensity statistics, subject count, views, labelled subjects (nnU-Net style).

    ``t``: the store's SliceTable; ``part_stats``: each committed part's ``subject_stats`` attribute
    ({subject: {view: intensity_stats}}).
    """
    fp: dict = {
        "schema_version": SCHEMA_VERSION,
        "grid_size": grid_size,
        "spacing_mm": spacing_mm,
        "subjects": len(t.subject_ids),
        "slices": len(t),
        "parts": len(t.part_ids),
    }

    def dist(x):
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            return None
        return {
            "min": float(x.min()),
            "p5": float(np.percentile(x, 5)),
            "median": float(np.median(x)),
            "p95": float(np.percentile(x, 95)),
            "max": float(x.max()),
        }

    views = {}
    for code, name in enumerate(VIEWS):
        sel = t.view == code
        if not sel.any():
            continue
        subj = t.subject[sel]
        views[name] = {
            "slices": int(sel.sum()),
            "subjects": int(np.unique(subj).size),
            "labelled_subjects": int(np.unique(subj[t.has_label[sel]]).size),
            "frames_per_subject": dist(_per_subject_counts(subj, t.frame[sel])),
            "source_row_spacing_mm": dist(t.source_plane[sel, 9]),
            "source_col_spacing_mm": dist(t.source_plane[sel, 10]),
            "source_rows": dist(t.source_shape[sel, 0]),
            "source_cols": dist(t.source_shape[sel, 1]),
        }
    fp["views"] = views
    fp["labelled_subjects"] = int(np.unique(t.subject[t.has_label]).size)
    fp["labelled_slices"] = int(t.has_label.sum())

    # SA slice gap: distance between neighbouring slice planes of one subject and frame.
    gaps = []
    sa = np.flatnonzero(t.view == VIEWS.index("sa"))
    if sa.size:
        key = t.subject[sa].astype(np.int64) * 1_000_000 + t.frame[sa]
        for k in np.unique(key)[:2000]:  # a sample of stacks is plenty for a fingerprint
            rows = sa[key == k]
            if rows.size < 2:
                continue
            rows = rows[np.argsort(t.slice_index[rows])]
            normal = Plane.from_vector(t.source_plane[rows[0]]).normal
            pos = t.source_plane[rows, 0:3] @ normal
            gaps.extend(np.abs(np.diff(pos)).tolist())
    fp["sa_slice_gap_mm"] = dist(gaps)

    stats = []
    for subject_stats in part_stats:
        for per_view in subject_stats.values():
            stats.extend(per_view.values())
    if stats:
        n = np.array([s["n_pixels"] for s in stats], np.float64)
        mean = np.array([s["mean"] for s in stats])
        std = np.array([s["std"] for s in stats])
        pooled_mean = float((n * mean).sum() / n.sum())
        pooled_var = float((n * (std**2 + (mean - pooled_mean) ** 2)).sum() / n.sum())
        fp["intensity"] = {
            "mean": pooled_mean,
            "std": float(np.sqrt(pooled_var)),
            "min": float(min(s["min"] for s in stats)),
            "max": float(max(s["max"] for s in stats)),
            "p0_5": dist([s["p0_5"] for s in stats]),
            "p50": dist([s["p50"] for s in stats]),
            "p99_5": dist([s["p99_5"] for s in stats]),
            "note": "per (subject, view) robust stats; p* give their distribution over subject-views",
        }
    else:
        fp["intensity"] = None
    return fp


def _per_subject_counts(subject: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Number of distinct frames per subject present."""
    pairs = np.unique(np.stack([subject.astype(np.int64), frame.astype(np.int64)], axis=1), axis=0)
    counts = np.bincount(pairs[:, 0])
    return counts[counts > 0]

