"""Running the geometry QC (``plane_qc``) over a cohort store, subject by subject.

Each subject's SA slices and 2ch/3ch/4ch cines are read from the store through ``CohortDataset``
(raw intensities, no normalisation: the NCC does not care about scale), on the stored grid and its
plane (see ``plane_qc`` for why that is the source geometry's line). Subjects run in a process pool
when ``workers`` > 1; results come back per subject so a caller can show progress, and
``write_qc`` stores them (``store.qc``).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import numpy as np

from .geometry import Plane
from .plane_qc import MAX_FRAMES, SEARCH_MM, Cine, estimate_subject
from .records import LA_VIEWS

QC_VIEWS = ("sa", *LA_VIEWS)


class _Subjects:
    """A ``CohortDataset`` over QC_VIEWS and each subject's rows in it (built once per process)."""

    def __init__(self, store_path) -> None:
        from .torch_dataset import CohortDataset

        self.dataset = CohortDataset(store_path, views=QC_VIEWS, normalise=False)
        subj = self.dataset.sample_subjects
        order = np.argsort(subj, kind="stable")
        cuts = np.flatnonzero(np.diff(subj[order])) + 1
        self.rows = {self.dataset.subject_ids[int(subj[g[0]])]: g for g in np.split(order, cuts) if g.size}


_OPEN: dict[str, _Subjects] = {}


def _subjects(store_path) -> _Subjects:
    key = str(store_path)
    if key not in _OPEN:
        _OPEN.clear()
        _OPEN[key] = _Subjects(store_path)
    return _OPEN[key]


def subject_cines(store_path, subject_id: str) -> tuple[list[Cine], list[Cine]]:
    """(SA cines by slice, LA cines) of one subject, read from the store."""
    index = _subjects(store_path)
    ds = index.dataset
    groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for i in index.rows.get(subject_id, ()):
        m = ds.meta(int(i))
        groups.setdefault((m["view"], m["slice_index"]), []).append((m["frame"], int(i)))
    sa, la = [], []
    for (view, k), items in sorted(groups.items()):
        items.sort()
        frames = np.array([f for f, _ in items])
        images = np.stack([ds[i]["image"][0] for _, i in items])
        plane = Plane.from_vector(ds.meta(items[0][1])["plane"])
        cine = Cine(view, plane, images, frames, int(frames.max()) + 1, k)
        if view == "sa":
            sa.append(cine)
        elif k == 0:  # a repeated LA plane (DICOM: 2ch slice 1) adds nothing the first does not
            la.append(cine)
    return sa, la


def _run_one(store_path, subject_id: str, params: dict) -> list[dict]:
    sa, la = subject_cines(store_path, subject_id)
    out = []
    for e in estimate_subject(sa, la, search_mm=params["search_mm"], max_frames=params["max_frames"]):
        row = asdict(e)
        row["subject_id"] = subject_id
        row["views"] = ",".join(e.views)
        row["correction_world"] = [float(x) for x in e.correction_world]
        row["correction_plane"] = [float(x) for x in e.correction_plane]
        out.append(row)
    return out


def run_qc(store_path, subjects: list[str] | None = None, *, workers: int = 1, search_mm: float = SEARCH_MM,
           max_frames: int = MAX_FRAMES) -> Iterator[tuple[str, list[dict]]]:
    """(subject_id, rows) for every subject (every subject of the store by default), in order."""
    from .store import CohortStore

    store = CohortStore(store_path)
    ids = store.subject_ids() if subjects is None else list(subjects)
    missing = [x for x in ids if not store.has_subject(x)]
    if missing:
        from .store import StoreError

        raise StoreError(f"subjects not in {store_path}: {', '.join(missing[:10])}")
    params = {"search_mm": float(search_mm), "max_frames": int(max_frames)}
    if workers <= 1:
        for sid in ids:
            yield sid, _run_one(store_path, sid, params)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_one, str(store_path), sid, params) for sid in ids]
        for sid, fut in zip(ids, futures):
            yield sid, fut.result()
