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
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-b", "--all"])
    assert res.exit_code == 0
    assert res.output.count("stored") == 8 and res.output.count("source") >= 8
    assert "(0.800, 0.600, 0.000)" in res.output and "1.250 x 1.500" in res.output and "LPS" in res.output


def test_info_subject_is_compact_by_default_and_filters_by_view_and_frame(store):
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-b"])
    assert res.exit_code == 0, res.output
    assert "stored" not in res.output and "per view" in res.output  # one row per view, no slice list
    lines = [ln for ln in res.output.splitlines() if ln.startswith("│")]
    assert [ln.split("│")[1].strip() for ln in lines] == ["sa", "4ch"]
    sa = lines[0].split("│")
    assert [c.strip() for c in sa[2:7]] == ["2", "3", "0", "3", "0"]  # frames, slices/frame, ED, ES, labelled
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-a", "--view", "sa", "--frame", "3"])
    assert res.exit_code == 0 and res.output.count("stored") == 3 and "4ch" not in res.output
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-a", "--view", "4ch", "--json"])
    assert [s["view"] for s in json.loads(res.output)["slices"]] == ["4ch", "4ch"]
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-a", "--frame", "7"])
    assert res.exit_code == 2 and "frames: 0, 3" in res.output


def test_meta_is_shortened_at_item_boundaries_never_inside_a_number():
    from cardiossl.platform.cli.cohort import format_meta

    meta = {"a": 1.23456789, **{f"k{i}": [float(i) + 0.123456789] * 20 for i in range(20)}}
    text = format_meta(meta, limit=200)
    assert text.startswith("a=1.235, k0=[0.1235,") and text.endswith("more (--json for all)")
    shown = text.split(", ... ")[0]
    for item in shown.split(", k")[1:]:
        assert item.endswith("]")  # whole values only


def test_info_errors_are_clear(store, tmp_path):
    res = runner.invoke(app, ["cohort", "info", str(tmp_path)])
    assert res.exit_code == 2 and "not a cardiossl cohort store" in res.output
    res = runner.invoke(app, ["cohort", "info", str(store.path), "--subject", "sub-x"])
    assert res.exit_code == 2 and "sub-x" in res.output and "did you mean" in res.output


def _geometry_subject(sid: str, la: dict[str, Plane]) -> SubjectRecord:
    """3 SA slices (axial, 40 x 40 px of 2 mm centred on the origin), 2 frames, and the given LA planes."""
    rng = np.random.default_rng(len(sid))
    slices = []
    for t, phase in ((0, "ed"), (1, "")):
        for k in range(3):
            sa = Plane([-39.0, -39.0, -8.0 * k], [1, 0, 0], [0, 1, 0], (2.0, 2.0))  # image centre (0, 0, -8k)
            slices.append(SliceRecord("sa", k, t, rng.normal(100, 10, (40, 40)).astype(np.float32), sa, None, phase,
                                      k / 2))
        for view, plane in la.items():
            slices.append(SliceRecord(view, 0, t, rng.normal(100, 10, (40, 40)).astype(np.float32), plane, None, phase))
    return SubjectRecord(sid, slices, {})


def _vertical(normal, through) -> Plane:
    """A long-axis plane (containing z) with this in-plane normal, through a point."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    row = np.cross([0.0, 0.0, 1.0], n)
    return Plane(np.asarray(through, float) - 20 * row, row, [0, 0, -1], (2.0, 2.0))


@pytest.fixture(scope="module")
def geometry_store(tmp_path_factory):
    axial = Plane([0, 0, 30.0], [1, 0, 0], [0, 1, 0], (2.0, 2.0))  # parallel to the SA slices
    st = CohortStore.create(tmp_path_factory.mktemp("geo") / "geo.zarr", grid_size=40, spacing_mm=2.0)
    st.write_subjects([
        _geometry_subject("ok", {"2ch": _vertical([1, 0, 0], [0, 0, 0]), "4ch": _vertical([0, 1, 0], [0, 0, 0])}),
        _geometry_subject("only4ch", {"4ch": _vertical([0, 1, 0], [0, 5, 0])}),
        _geometry_subject("none", {}),
        _geometry_subject("parallel", {"2ch": axial, "4ch": axial}),
        _geometry_subject("far", {"2ch": _vertical([1, 0, 0], [300, 0, 0]), "4ch": _vertical([0, 1, 0], [0, 300, 0])}),
    ])
    return st


def test_info_reports_target_availability_and_missing_views(geometry_store):
    res = runner.invoke(app, ["cohort", "info", str(geometry_store.path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["missing_views"] == {"sa": [], "2ch": ["only4ch", "none"], "3ch": ["ok", "only4ch", "none",
                                     "parallel", "far"], "4ch": ["none"]}
    targets = {(t["pretext"], json.dumps(t["config"], sort_keys=True)): t for t in data["targets"]}
    boxes = targets[("position", '{"target": "boxes"}')]
    assert boxes["slices"] == 15 and boxes["frames"] == 30  # 5 subjects x 3 stack positions, 2 frames each
    assert boxes["with_target"] == 6  # ok (2ch x 4ch) and only4ch (virtual plane)
    assert boxes["reasons"] == {"no LA view": 3, "traces parallel": 3, "crossing outside the image": 3}
    lines = targets[("position", '{"target": "lines"}')]
    assert lines["with_target"] == 6 and lines["reasons"] == {"no LA view": 3, "traces parallel": 3,
                                                              "traces outside the image": 3}
    assert targets[("position", '{"target": "slice_location"}')]["with_target"] == 15
    assert targets[("rotation", "{}")]["with_target"] == 15
    assert data["qc"] is None
    res = runner.invoke(app, ["cohort", "info", str(geometry_store.path)])
    assert res.exit_code == 0 and "crossing outside the image: 3" in res.output and "only4ch, none" in res.output


def test_list_names_every_subject_with_views_frames_and_labelled_phases(store, geometry_store):
    res = runner.invoke(app, ["cohort", "list", str(store.path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [s["subject_id"] for s in data] == ["sub-a", "sub-b", "sub-c"]
    assert data[0] == {"subject_id": "sub-a", "views": {"sa": {"slices": 3, "frames": 2}, "4ch": {"slices": 1, "frames": 2}},
                       "labelled": {"sa": ["ed", "es"]}}
    assert data[1]["labelled"] == {}
    res = runner.invoke(app, ["cohort", "list", str(geometry_store.path)])
    assert res.exit_code == 0 and "only4ch" in res.output and "sa 3x2, 4ch 1x2" in res.output
    res = runner.invoke(app, ["cohort", "list", str(store.path.parent)])
    assert res.exit_code == 2 and "not a cardiossl cohort store" in res.output
