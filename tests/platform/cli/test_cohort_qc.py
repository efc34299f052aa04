"""`cardiossl cohort qc`: synthetic subjects whose SA planes were moved, measured through a real store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.store import CohortStore, read_qc
from cardiossl.datasets.synthetic import synth_subject
from cardiossl.datasets.torch_dataset import CohortDataset
from cardiossl.platform.cli import app
from cardiossl.pretexts.position import PositionPretext

runner = CliRunner()
REAL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "real"


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Two subjects; every SA slice's header moved in-plane (subject 1 by up to 10 mm, subject 0 by 2)."""
    rng = np.random.default_rng(5)
    records, injected, truth = [], {}, {}
    for i, amp in ((0, 2.0), (1, 10.0)):
        rec = synth_subject(f"synth{i:05d}", 2, n_frames=4, version=1)  # consistent planes: only injected shifts
        for s in rec.slices:
            if s.view != "sa":
                continue
            key = (rec.subject_id, s.slice_index)
            if key not in injected:
                a, b = rng.uniform(-amp, amp, 2)
                injected[key] = a * s.plane.row_dir + b * s.plane.col_dir
                truth[key] = (s.plane, s.label is not None and (s.label == 1).sum() > 50)
            s.plane = Plane(s.plane.origin + injected[key], s.plane.row_dir, s.plane.col_dir, s.plane.spacing)
        records.append(rec)
    store = CohortStore.create(tmp_path_factory.mktemp("qc") / "cohort.zarr", grid_size=128, spacing_mm=1.5)
    store.write_subjects(records)
    return store, injected, truth


def test_qc_recovers_the_shifts_stores_them_and_reports(shifted, tmp_path):
    store, injected, truth = shifted
    res = runner.invoke(app, ["cohort", "qc", str(store.path), "--out", str(tmp_path / "rep"), "--flag-mm", "4", "-q"])
    assert res.exit_code == 0, res.output
    qc = read_qc(store.path)
    assert len(qc) == len(injected) and qc.info["params"]["flag_mm"] == 4.0 and qc.info["parts"] == store.part_ids()
    for r in qc.rows():
        key = (r["subject_id"], r["slice_index"])
        err = np.linalg.norm(np.asarray(r["correction_world"]) + injected[key])
        assert r["status"] == "ok" and err < (1.0 if truth[key][1] else 2.0), (key, err)
    assert qc.subject_summary("synth00001")["flagged"] and not qc.subject_summary("synth00000")["flagged"]
    rows = list(csv.DictReader(open(tmp_path / "rep" / "slices.csv")))
    assert len(rows) == len(injected) and {r["status"] for r in rows} == {"ok"}
    subj = {r["subject_id"]: r for r in csv.DictReader(open(tmp_path / "rep" / "subjects.csv"))}
    assert subj["synth00001"]["flagged"] == "1" and subj["synth00000"]["flagged"] == "0"
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["flagged"] == ["synth00001"] and summary["distribution"]["slice_shift_mm"]["n"] == len(injected)
    assert (tmp_path / "rep" / "synth00001.png").stat().st_size > 20_000
    assert not (tmp_path / "rep" / "synth00000.png").exists()
    assert "flagged (median > 4 mm): 1: synth00001" in res.output
    info = json.loads(runner.invoke(app, ["cohort", "info", str(store.path), "--json"]).output)["qc"]
    assert info["flagged"] == ["synth00001"] and info["not_covered"] == []


def test_corrected_planes_put_the_box_centre_back_on_the_true_crossing(shifted, tmp_path):
    store, injected, truth = shifted
    if read_qc(store.path) is None:
        assert runner.invoke(app, ["cohort", "qc", str(store.path), "--out", str(tmp_path), "-q"]).exit_code == 0
    plain, corrected = PositionPretext(), PositionPretext({"plane_correction": "qc"})
    ds = CohortDataset(store.path, subjects=["synth00001"], views=("sa",), filter=corrected.accepts)
    assert len(ds) == sum(1 for k in truth if k[0] == "synth00001") * 4
    for i in range(0, len(ds), 5):
        m = ds.meta(i)
        true_plane, through_lv = truth[(m["subject_id"], m["slice_index"])]
        la = [Plane.from_vector(v) for v in m["la_planes"][[0, 2]]]
        normals = np.stack([true_plane.normal] + [p.normal for p in la])
        crossing = np.linalg.solve(normals, [true_plane.normal @ true_plane.origin] + [p.normal @ p.origin for p in la])
        stored = Plane.from_vector(m["plane"])
        delta = injected[(m["subject_id"], m["slice_index"])]
        # the anatomy a grid pixel shows lies at its header position minus the injected shift
        anatomy = lambda px: stored.pixel_to_world(*px) - delta  # noqa: E731
        off_before = np.linalg.norm(anatomy(plain.geometry(m).center) - crossing)
        off_after = np.linalg.norm(anatomy(corrected.geometry(m).center) - crossing)
        assert off_before == pytest.approx(np.linalg.norm(delta), abs=1e-6)
        assert off_after < (1.0 if through_lv else 2.0)  # the box centre sits on the true crossing again
    strict = PositionPretext({"max_qc_shift_mm": 4.0})
    kept = CohortDataset(store.path, views=("sa",), filter=strict.accepts)
    assert kept.subjects == ["synth00000"]


def test_qc_errors_are_clear(shifted, tmp_path):
    store, _, _ = shifted
    res = runner.invoke(app, ["cohort", "qc", str(tmp_path)])
    assert res.exit_code == 2 and "not a cardiossl cohort store" in res.output
    res = runner.invoke(app, ["cohort", "qc", str(store.path), "--subject", "nobody", "-q", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "nobody" in res.output
    res = runner.invoke(app, ["cohort", "qc", str(store.path), "--figures", "some"])
    assert res.exit_code != 0 and "flagged, all or none" in res.output


@pytest.mark.real
@pytest.mark.skipif(not (REAL / "bivme-patient1").is_dir(), reason="real bivme exam not available")
def test_real_bivme_exam_is_measured_on_every_sa_slice(tmp_path):
    from cardiossl.datasets.ingest import ingest

    ingest(REAL / "bivme-patient1", tmp_path / "bivme.zarr", layout="dicom", workers=1, grid_size=160,
           spacing_mm=1.5, progress=False)
    res = runner.invoke(app, ["cohort", "qc", str(tmp_path / "bivme.zarr"), "--out", str(tmp_path / "rep"), "-q",
                              "--figures", "all"])
    assert res.exit_code == 0, res.output
    rows = read_qc(tmp_path / "bivme.zarr").rows()
    assert len(rows) == 6 and all(r["status"] == "ok" and r["views"] == "2ch,3ch,4ch" for r in rows)
    assert all(r["shift_mm"] < 8.0 and r["ncc_after"] >= r["ncc_before"] for r in rows)
    assert len(list((tmp_path / "rep").glob("*.png"))) == 1
