"""The cohort fingerprint: what data a run saw, recorded beside the decisions derived from it.

As nnU-Net records a dataset fingerprint (Isensee et al., Nat. Methods 2021): subject and slice
counts, per-view source spacings and shapes, the SA slice gap, pooled intensity statistics.
Computed from the store's index alone (no image is read). It describes the data only (no time,
no file layout), and carries the snapshot's ``content_hash``: the same data gives the same
fingerprint, and a re-ingest that adds nothing leaves it unchanged.
"""

from __future__ import annotations

import numpy as np

from ..geometry import Plane
from ..records import VIEWS
from .index import STATS_FIELDS
from .layout import SCHEMA_VERSION


def compute_fingerprint(t, grid_size: int, spacing_mm: float, content_hash: str) -> dict:
    """Spacings, shapes, intensity statistics, subject count, views, labelled subjects (nnU-Net style).

    ``t``: a SliceTable built with its (subject, view) intensity statistics and source planes (``with_stats``).
    """
    fp: dict = {
        "schema_version": SCHEMA_VERSION,
        "grid_size": grid_size,
        "spacing_mm": spacing_mm,
        "content_hash": content_hash,
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
            "source_row_spacing_mm": dist(t.source_planes[t.source_index[sel], 9]),
            "source_col_spacing_mm": dist(t.source_planes[t.source_index[sel], 10]),
            "source_rows": dist(t.source_shapes[t.source_index[sel], 0]),
            "source_cols": dist(t.source_shapes[t.source_index[sel], 1]),
        }
    fp["views"] = views
    fp["labelled_subjects"] = int(np.unique(t.subject[t.has_label]).size)
    fp["labelled_slices"] = int(t.has_label.sum())

    # SA slice gap: distance between neighbouring slice planes of one subject and frame.
    gaps = []
    sa = np.flatnonzero(t.view == VIEWS.index("sa"))
    source_plane = t.source_planes[t.source_index[sa]] if sa.size else None
    if sa.size:
        key = t.subject[sa].astype(np.int64) * 1_000_000 + t.frame[sa]
        order = np.argsort(key, kind="stable")
        uniq, starts = np.unique(key[order], return_index=True)
        ends = np.append(starts[1:], order.size)
        for a, b in list(zip(starts, ends))[:2000]:  # a sample of stacks is plenty for a fingerprint
            local = order[a:b]
            if local.size < 2:
                continue
            local = local[np.argsort(t.slice_index[sa[local]], kind="stable")]
            normal = Plane.from_vector(source_plane[local[0]]).normal
            pos = source_plane[local, 0:3] @ normal
            gaps.extend(np.abs(np.diff(pos)).tolist())
    fp["sa_slice_gap_mm"] = dist(gaps)

    stats = t.stats if t.stats is not None else np.zeros((0, len(STATS_FIELDS)))
    if stats.shape[0]:
        col = {f: stats[:, i] for i, f in enumerate(STATS_FIELDS)}
        n, mean, std = col["n_pixels"], col["mean"], col["std"]
        pooled_mean = float((n * mean).sum() / n.sum())
        pooled_var = float((n * (std**2 + (mean - pooled_mean) ** 2)).sum() / n.sum())
        fp["intensity"] = {
            "mean": pooled_mean,
            "std": float(np.sqrt(pooled_var)),
            "min": float(col["min"].min()),
            "max": float(col["max"].max()),
            "p0_5": dist(col["p0_5"]),
            "p50": dist(col["p50"]),
            "p99_5": dist(col["p99_5"]),
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

