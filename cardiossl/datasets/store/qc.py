"""Geometry QC estimates kept in the store: ``STORE/qc/geometry.npz``, a derived artefact.

The estimates (``cardiossl.datasets.plane_qc``: each SA slice's in-plane misregistration against
the LA images) belong with the cohort they describe, so training jobs that opt into corrected planes
find them without another path. They are derived, not data: the committed parts are never touched,
and the file can be deleted and recomputed at any time (``cardiossl cohort qc STORE``).

Written atomically: the whole file goes to ``qc/.tmp-<pid>-<random>.npz``, is fsynced, and is
``os.replace``d over ``qc/geometry.npz`` under the store's ``.lock``, then the folder is fsynced. A
reader sees the previous file or the new one, never a mixture; a crash leaves at most a temporary
file (a later write removes those older than an hour). Self-contained: besides one row per SA slice it records the format
and version, when and with which parameters it was computed, and the committed parts (id and commit
``seq``) it covers, so a reader can tell which subjects it does not cover. Loaded with
``allow_pickle=False``.

Arrays (N rows, one per SA slice of every subject covered):

====================  ===========  ==================================================================
``subject_id``        str (N,)     subject id
``slice_index``       int32 (N,)   SA slice (0 = base)
``status``            str (N,)     ``ok``, ``at search limit``, ``no LA view`` or ``too few samples``
``correction_world``  f8 (N, 3)    LPS mm to add to the slice's plane origin (NaN without an estimate)
``correction_plane``  f8 (N, 2)    the same along the plane's row_dir and col_dir
``shift_mm``          f8 (N,)      its length
``ncc_before``        f8 (N,)      pooled NCC of the SA and LA profiles as stored
``ncc_after``         f8 (N,)      ... after the correction
``spread_mm``         f8 (N,)      how flat the optimum is (``plane_qc``): large = ambiguous
``n_samples``         int32 (N,)   profile samples over all views and frames
``views``             str (N,)     LA views used, comma-separated
``info``              str ()       JSON: format, version, created_at, params, parts, subjects
====================  ===========  ==================================================================

``info["subjects"]`` maps each subject to its summary: ``median_shift_mm`` and ``max_shift_mm`` over
its measured slices (``ok`` or ``at search limit``, a lower bound) and ``flagged`` (median above
``params["flag_mm"]``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .durable import flock, fsync_dir
from .layout import StoreError

QC_FORMAT = "cardiossl.qc.geometry"
QC_VERSION = 1
QC_DIR = "qc"
QC_FILE = "geometry.npz"
MEASURED = ("ok", "at search limit")  # statuses with an estimate (the second: at least that large)
COLUMNS = ("subject_id", "slice_index", "status", "correction_world", "correction_plane", "shift_mm",
           "ncc_before", "ncc_after", "spread_mm", "n_samples", "views")


@dataclass
class QCEstimates:
    """The stored estimates: column arrays (``COLUMNS``) and ``info``."""

    columns: dict[str, np.ndarray]
    info: dict

    def __len__(self) -> int:
        return int(self.columns["subject_id"].shape[0])

    def subject_summary(self, subject_id: str) -> dict | None:
        return (self.info.get("subjects") or {}).get(subject_id)

    def slices(self) -> dict[tuple[str, int], int]:
        """(subject_id, slice_index) -> row."""
        c = self.columns
        return {(str(s), int(k)): i for i, (s, k) in enumerate(zip(c["subject_id"], c["slice_index"]))}

    def rows(self) -> list[dict]:
        """One dict per row (plain Python values), for tables and CSV."""
        c = self.columns
        out = []
        for i in range(len(self)):
            out.append({
                "subject_id": str(c["subject_id"][i]), "slice_index": int(c["slice_index"][i]),
                "status": str(c["status"][i]), "correction_world": [float(x) for x in c["correction_world"][i]],
                "correction_plane": [float(x) for x in c["correction_plane"][i]], "shift_mm": float(c["shift_mm"][i]),
                "ncc_before": float(c["ncc_before"][i]), "ncc_after": float(c["ncc_after"][i]),
                "spread_mm": float(c["spread_mm"][i]), "n_samples": int(c["n_samples"][i]), "views": str(c["views"][i]),
            })
        return out


def qc_path(store_path) -> Path:
    return Path(store_path) / QC_DIR / QC_FILE


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    n = len(rows)
    get = lambda k, default: [r.get(k, default) for r in rows]  # noqa: E731
    return {
        "subject_id": np.array(get("subject_id", ""), dtype="<U128").reshape(n),
        "slice_index": np.array(get("slice_index", 0), dtype=np.int32).reshape(n),
        "status": np.array(get("status", ""), dtype="<U32").reshape(n),
        "correction_world": np.array(get("correction_world", [np.nan] * 3), dtype=np.float64).reshape(n, 3),
        "correction_plane": np.array(get("correction_plane", [np.nan] * 2), dtype=np.float64).reshape(n, 2),
        "shift_mm": np.array(get("shift_mm", np.nan), dtype=np.float64).reshape(n),
        "ncc_before": np.array(get("ncc_before", np.nan), dtype=np.float64).reshape(n),
        "ncc_after": np.array(get("ncc_after", np.nan), dtype=np.float64).reshape(n),
        "spread_mm": np.array(get("spread_mm", np.nan), dtype=np.float64).reshape(n),
        "n_samples": np.array(get("n_samples", 0), dtype=np.int32).reshape(n),
        "views": np.array(get("views", ""), dtype="<U16").reshape(n),
    }


def summarise(rows: list[dict], flag_mm: float) -> dict[str, dict]:
    """Per subject: median and max shift over its measured slices, and whether it is flagged."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["subject_id"], [])
        if r["status"] in MEASURED:
            by[r["subject_id"]].append(float(r["shift_mm"]))
    out = {}
    for sid, shifts in by.items():
        med = float(np.median(shifts)) if shifts else float("nan")
        out[sid] = {"median_shift_mm": med, "max_shift_mm": float(max(shifts)) if shifts else float("nan"),
                    "ok_slices": len(shifts), "flagged": bool(shifts) and med > flag_mm}
    return out


def write_qc(store_path, rows: list[dict], *, params: dict, parts: list[dict]) -> Path:
    """Replace the store's QC estimates with ``rows`` (dicts with ``COLUMNS`` keys), atomically."""
    store_path = Path(store_path)
    folder = store_path / QC_DIR
    folder.mkdir(exist_ok=True)
    info = {
        "format": QC_FORMAT, "version": QC_VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": params, "parts": parts, "subjects": summarise(rows, float(params.get("flag_mm", np.inf))),
    }
    columns = _columns(rows)
    tmp = folder / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, info=np.array(json.dumps(info, allow_nan=True)), **columns)
            f.flush()
            os.fsync(f.fileno())
        with flock(store_path / ".lock"):
            for stale in folder.glob(".tmp-*"):
                if stale != tmp and stale.stat().st_mtime < time.time() - 3600:
                    stale.unlink(missing_ok=True)
            os.replace(tmp, folder / QC_FILE)
            fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return folder / QC_FILE


def read_qc(store_path) -> QCEstimates | None:
    """The stored estimates, or None when the store has none; StoreError for a damaged file."""
    path = qc_path(store_path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            columns = {k: z[k] for k in COLUMNS}
            info = json.loads(str(z["info"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{path}: unreadable geometry QC file ({exc}); delete it and run `cardiossl cohort qc` "
                         "again") from None
    if info.get("format") != QC_FORMAT or info.get("version") != QC_VERSION:
        raise StoreError(f"{path}: not a version-{QC_VERSION} geometry QC file ({info.get('format')} "
                         f"v{info.get('version')}); run `cardiossl cohort qc` again")
    return QCEstimates(columns, info)
