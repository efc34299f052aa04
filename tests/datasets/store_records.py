"""Hand-made subject records for the store and dataset tests: small random images, planes built by hand."""

from __future__ import annotations

import numpy as np

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.records import SliceRecord, SubjectRecord


def oblique_frame(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal (row, col, normal) of an oblique plane."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q[:, 0], q[:, 1], np.cross(q[:, 0], q[:, 1])


def make_subject(
    subject_id: str,
    seed: int,
    *,
    n_sa: int = 3,
    frames: int = 2,
    la_views: tuple[str, ...] = ("4ch",),
    labelled: bool = True,
    shape: tuple[int, int] = (24, 28),
    spacing: tuple[float, float] = (1.8, 1.6),
    level: float = 500.0,
) -> SubjectRecord:
    """SA stack (``n_sa`` slices x ``frames``) and single LA slices; labels on SA at ED/ES when asked."""
    rng = np.random.default_rng(seed)
    row, col, normal = oblique_frame(seed)
    centre = rng.uniform(-30, 30, 3)
    slices = []
    for t in range(frames):
        phase = "ed" if t == 0 else ("es" if t == 1 else "")
        for k in range(n_sa):
            origin = centre + 8.0 * k * normal
            img = rng.normal(level, level / 10, shape).astype(np.float32)
            lab = rng.integers(0, 4, shape).astype(np.uint8) if labelled and phase else None
            slices.append(
                SliceRecord("sa", k, t, img, Plane(origin, row, col, spacing), lab, phase,
                            stack_position=k / max(n_sa - 1, 1))
            )
        for j, view in enumerate(la_views):
            ang = 0.7 * (j + 1)
            r2 = np.cos(ang) * row + np.sin(ang) * col
            img = rng.normal(level * 0.6, level / 12, shape).astype(np.float32)
            slices.append(SliceRecord(view, 0, t, img, Plane(centre, r2, normal, spacing), None, phase))
    return SubjectRecord(subject_id, slices, {"seed": seed, "ed_frame": 0, "es_frame": 1, "level": np.float32(level)})


def iter_subject_images(store, subject_id: str):
    """(slice dict, image, label) for every stored slice of one subject (zarr-python reads)."""
    for s in store.subject_slices(subject_id):
        image, label = store.read_slice(s["part"], s["row"])
        yield s, image, label
