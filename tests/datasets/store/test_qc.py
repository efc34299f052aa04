"""The geometry QC artefact in a store: atomic replacement, self-description, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/datasets: the record builders
from store_records import make_subject  # noqa: E402

from cardiossl.datasets.store import CohortStore, StoreError, qc_path, read_qc, write_qc


def rows(n_subjects=2, shift=1.0):
    out = []
    for s in range(n_subjects):
        for k in range(3):
            out.append({"subject_id": f"sub-{s}", "slice_index": k, "status": "ok" if k < 2 else "no LA view",
                        "correction_world": [shift * (s + 1), 0.0, -k], "correction_plane": [shift * (s + 1), k],
                        "shift_mm": shift * (s + 1) + k, "ncc_before": 0.5, "ncc_after": 0.9, "spread_mm": 1.5,
                        "n_samples": 100 + k,
                        "views": "2ch,4ch"})
    return out


@pytest.fixture
def store(tmp_path):
    return CohortStore.create(tmp_path / "s.zarr", grid_size=16, spacing_mm=2.0)


def test_round_trip_and_summary(store):
    assert read_qc(store.path) is None
    path = write_qc(store.path, rows(), params={"flag_mm": 2.5, "search_mm": 15.0}, parts=["p1"])
    assert path == qc_path(store.path) and [p.name for p in path.parent.iterdir()] == ["geometry.npz"]
    qc = read_qc(store.path)
    assert len(qc) == 6 and qc.rows() == [dict(r) for r in rows()]
    assert qc.info["params"]["flag_mm"] == 2.5 and qc.info["parts"] == ["p1"] and qc.info["version"] == 1
    # medians over the ok slices only: sub-0 {1, 2} -> 1.5, sub-1 {2, 3} -> 2.5 (not above 2.5: not flagged)
    assert qc.subject_summary("sub-0") == {"median_shift_mm": 1.5, "max_shift_mm": 2.0, "ok_slices": 2,
                                           "flagged": False}
    assert qc.subject_summary("sub-1")["median_shift_mm"] == 2.5 and not qc.subject_summary("sub-1")["flagged"]
    assert qc.slices()[("sub-1", 2)] == 5


def test_rewrite_replaces_the_whole_file_and_never_touches_parts(store):
    store.write_subjects([make_subject("s0", 0)])
    before = sorted(p.relative_to(store.path) for p in store.path.rglob("*") if "qc" not in p.parts)
    write_qc(store.path, rows(3), params={"flag_mm": 1.0}, parts=store.part_ids())
    write_qc(store.path, rows(1, shift=4.0), params={"flag_mm": 1.0}, parts=store.part_ids())
    qc = read_qc(store.path)
    assert sorted({r["subject_id"] for r in qc.rows()}) == ["sub-0"] and qc.rows()[0]["shift_mm"] == 4.0
    assert qc.subject_summary("sub-0")["flagged"]
    after = sorted(p.relative_to(store.path) for p in store.path.rglob("*") if "qc" not in p.parts)
    assert before == after and store.subject_ids() == ["s0"]
    assert not list((store.path / "qc").glob(".tmp-*"))


def test_a_failed_write_keeps_the_previous_file(store, monkeypatch):
    write_qc(store.path, rows(1), params={"flag_mm": 1.0}, parts=[])
    good = qc_path(store.path).read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        write_qc(store.path, rows(2), params={"flag_mm": 1.0}, parts=[])
    assert qc_path(store.path).read_bytes() == good and not list((store.path / "qc").glob(".tmp-*"))


def test_damaged_or_foreign_files_are_clear_errors(store):
    write_qc(store.path, rows(1), params={"flag_mm": 1.0}, parts=[])
    path = qc_path(store.path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match="unreadable geometry QC file.*cardiossl cohort qc"):
        read_qc(store.path)
    with open(path, "wb") as f:
        np.savez(f, info=np.array(json.dumps({"format": "something else", "version": 9})),
                 **{k: np.zeros(0) for k in ("subject_id", "slice_index", "status", "correction_world",
                                               "correction_plane", "shift_mm", "ncc_before", "ncc_after",
                                               "spread_mm", "n_samples", "views")})
    with pytest.raises(StoreError, match="not a version-1 geometry QC file"):
        read_qc(store.path)
