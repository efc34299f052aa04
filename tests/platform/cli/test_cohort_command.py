"""`cardiossl cohort info` against a real store on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.records import SliceRecord, SubjectRecord
from cardiossl.datasets.store import CohortStore
from cardiossl.platform.cli import app

runner = CliRunner()


def _subject(sid: str, seed: int, labelled: bool) -> SubjectRecord:
    rng = np.random.default_rng(seed)
    row, col = np.array([0.8, 0.6, 0.0]), np.array([0.0, 0.0, -1.0])
    slices = []
    for t, phase in ((0, "ed"), (3, "es")):
        for k in range(3):
            origin = np.array([10.0, -5.0, 40.0]) + 8.0 * k * np.cross(row, col)
            img = rng.normal(400, 40, (20, 24)).astype(np.float32)
            lab = rng.integers(0, 4, (20, 24)).astype(np.uint8) if labelled else None
            slices.append(SliceRecord("sa", k, t, img, Plane(origin, row, col, (1.25, 1.5)), lab, phase, k / 2))
        slices.append(SliceRecord("4ch", 0, t, rng.normal(300, 30, (22, 22)).astype(np.float32),
                                  Plane([1.0, 2.0, 3.0], [1, 0, 0], [0, 1, 0], (1.4, 1.4)), None, phase))
    return SubjectRecord(sid, slices, {"ed_frame": 0, "es_frame": 3})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = CohortStore.create(tmp_path_factory.mktemp("cli") / "cohort.zarr", grid_size=32, spacing_mm=1.5)
    st.write_subjects([_subject("sub-a", 1, True), _subject("sub-b", 2, False)])
    st.write_subjects([_subject("sub-c", 3, True)])
    st.update_fingerprint()
    return st


def test_info_summary_table_and_json(store):
    res = runner.invoke(app, ["cohort", "info", str(store.path)])
    assert res.exit_code == 0, res.output
    assert "3 subjects" in res.output and "24 slices" in res.output and "2 labelled subjects" in res.output
    assert "sa" in res.output and "4ch" in res.output and "fingerprint" in res.output
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--json"])
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["subjects"] == 3 and data["slices_per_view"] == {"sa": 18, "4ch": 6}
    assert data["labelled_subjects"] == 2 and data["fingerprint"]["views"]["sa"]["source_rows"]["median"] == 20
    assert data["stored_fingerprint_current"] is True


def test_info_subject_lists_every_slice_with_both_planes(store):
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-b", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["coordinates"] == "LPS mm" and data["meta"] == {"ed_frame": 0, "es_frame": 3}
    assert len(data["slices"]) == 8 and data["slices"] == json.loads(json.dumps(store.subject_slices("sub-b")))
    sa1 = next(s for s in data["slices"] if s["view"] == "sa" and s["slice_index"] == 1 and s["frame"] == 3)
    assert sa1["source_plane"]["pixel_spacing"] == [1.25, 1.5] and sa1["plane"]["pixel_spacing"] == [1.5, 1.5]
    np.testing.assert_allclose(sa1["source_plane"]["origin"], np.array([10.0, -5.0, 40.0]) + 8.0 * np.array([-0.6, 0.8, 0.0]))
    np.testing.assert_allclose(sa1["plane"]["row_dir"], [0.8, 0.6, 0.0])
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-b"])
    assert res.exit_code == 0
    assert res.output.count("stored") == 8 and res.output.count("source") >= 8
    assert "(0.800, 0.600, 0.000)" in res.output and "1.250 x 1.500" in res.output and "LPS" in res.output


def test_info_errors_are_clear(store, tmp_path):
    res = runner.invoke(app, ["cohort", "info", str(tmp_path)])
    assert res.exit_code == 2 and "not a cardiossl cohort store" in res.output
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-x"])
    assert res.exit_code == 2 and "sub-x" in res.output and "did you mean" in res.output
