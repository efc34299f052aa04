"""Reference labels of test subjects on their SOURCE pixels, and which classes each subject annotates.

The store keeps labels on its training grid only (resampled, cropped to the grid's field of view),
but it records where every subject came from (``meta["ingest"]``: layout, root, paths; older stores:
the reader's ``layout``/``source``, or a synthetic subject's seed and index) and the exact plane of
every source slice. So the test labels are re-read from the source, each slice checked against the
stored source plane and shape, and predictions can be resampled back onto them and scored there:
nothing the training grid dropped is lost from the score. When the source cannot be read (moved
files, a remote store), the store's own grid labels are the reference and the row says so
(``reference: store grid``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

ALL_CLASSES = (1, 2, 3)


def label_classes(store_path: str, subject_ids: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Per subject, the label values its annotations cover (``meta["label_classes"]``, e.g. Sunnybrook
    [1, 2]: no RV contours); every class when the reader says nothing."""
    from cardiossl.datasets.store import CohortStore

    st = CohortStore(store_path)
    out = {}
    for sid in subject_ids:
        cls = st.subject_meta(sid).get("label_classes")
        out[sid] = tuple(sorted(int(c) for c in cls)) if cls else ALL_CLASSES
    return out


def read_source_record(subject_id: str, meta: Mapping):
    """(SubjectRecord, "") re-read from where the subject came from, or (None, why not)."""
    from cardiossl.datasets.readers import READERS
    from cardiossl.datasets.readers.base import SubjectSource

    try:
        ing = meta.get("ingest") or {}
        if ing.get("layout"):
            paths = tuple(Path(p) for p in ing.get("paths") or [])
            missing = [p for p in paths if not p.exists()]
            if missing:
                return None, f"source {missing[0]} is not readable here"
            return READERS.get(ing["layout"])().read(SubjectSource(subject_id, Path(ing["root"]), paths)), ""
        if meta.get("source") == "synthetic" and "seed" in meta:
            from cardiossl.datasets.synthetic import synth_subject

            kw = {"n_frames": int(meta.get("n_frames", 4)), "index": meta.get("index")}
            if "synth_version" in meta:
                kw["version"] = meta["synth_version"]
            return synth_subject(subject_id, int(meta["seed"]), **kw), ""
        layout, src = meta.get("layout"), meta.get("source")
        if layout and src and Path(str(src)).exists():
            src = Path(str(src))
            return READERS.get(layout)().read(SubjectSource(subject_id, src.parent, (src,))), ""
    except Exception as exc:  # an unreadable source falls back to the store grid, said in the row
        return None, f"source unreadable ({type(exc).__name__}: {str(exc)[:200]})"
    return None, "the store does not record where the subject came from"


def _grid_reference(stack: dict, why: str) -> dict:
    return {"labels": np.asarray(stack["labels"], dtype=np.uint8), "planes": np.asarray(stack["planes"]),
            "slice_index": np.asarray(stack["slice_index"]), "kind": "store grid", "why": why}


def reference_stacks(store_path: str, grid_stacks: Mapping[tuple[str, str], dict]) -> dict[tuple[str, str], dict]:
    """Per (subject, phase) of ``grid_stacks`` (the store's uncropped SA stacks, ``collect_stacks``):
    {"labels" [S, H, W] uint8, "planes" [S, 11], "slice_index" [S], "kind": "source" | "store grid",
    "why"}. Source slices are matched on (frame, slice index) and must have the stored source plane
    and shape; any mismatch makes the whole stack fall back to the grid labels."""
    from cardiossl.datasets.store import CohortStore

    st = CohortStore(store_path)
    out: dict[tuple[str, str], dict] = {}
    for sid in sorted({s for s, _ in grid_stacks}):
        rec, why = read_source_record(sid, st.subject_meta(sid))
        stored = [s for s in st.subject_slices(sid) if s["view"] == "sa" and s["has_label"]]
        for (s2, phase), stack in grid_stacks.items():
            if s2 != sid:
                continue
            if rec is None:
                out[(sid, phase)] = _grid_reference(stack, why)
                continue
            ref, why2 = _match(rec, stored, phase, stack)
            out[(sid, phase)] = ref if ref is not None else _grid_reference(stack, why2)
    return out


def _match(rec, stored: list[dict], phase: str, stack: dict):
    by_key = {(s.frame, s.slice_index): s for s in rec.slices if s.view == "sa" and s.label is not None}
    labels, planes = [], []
    for k in np.asarray(stack["slice_index"]).tolist():
        meta = [s for s in stored if s["phase"] == phase and s["slice_index"] == k]
        if len(meta) != 1:
            return None, f"{len(meta)} stored {phase} slices with index {k}"
        m = meta[0]
        src = by_key.get((m["frame"], k))
        if src is None:
            return None, f"source has no labelled slice (frame {m['frame']}, index {k})"
        sp = m["source_plane"]
        plane = np.concatenate([sp["origin"], sp["row_dir"], sp["col_dir"], sp["pixel_spacing"]])
        if tuple(src.label.shape) != tuple(m["source_shape"]) or not np.allclose(
                src.plane.to_vector(), plane, rtol=0, atol=1e-3):
            return None, f"source slice (frame {m['frame']}, index {k}) differs from the stored source geometry"
        labels.append(np.asarray(src.label, dtype=np.uint8))
        planes.append(plane)
    if len({lab.shape for lab in labels}) != 1:
        return None, "source slices of one stack have different matrix sizes"
    return {"labels": np.stack(labels), "planes": np.stack(planes), "slice_index": np.asarray(stack["slice_index"]),
            "kind": "source", "why": ""}, ""
