import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "readers"))  # the NIfTI cohort builders
from nifti_cohorts import (  # noqa: E402
    oblique,
    short_axis,
    save,
    truncate,
    write_acdc_patient,
    write_mnms2_subject,
)

from cardiossl.datasets.ingest import IngestError, detect_layout, ingest  # noqa: E402
from cardiossl.datasets.readers import READERS, SubjectSource  # noqa: E402
from cardiossl.datasets.readers.acdc import AcdcReader  # noqa: E402
from cardiossl.datasets.store import CohortStore, StoreError  # noqa: E402
from store_records import iter_subject_images  # noqa: E402

GRID = dict(grid_size=32, spacing_mm=2.0)
GEOM = short_axis()  # slice index grows towards the apex, so the stored order is the file order


def acdc_cohort(root: Path, numbers, **kw) -> dict:
    return {n: write_acdc_patient(root, n, GEOM, seed=n, n_frames=3, ed=1, es=2, **kw) for n in numbers}


def content(store_path: Path, subjects=None) -> dict:
    """Everything stored per subject (metadata, planes, pixels), independent of part layout/order."""
    store = CohortStore(store_path)
    out = {}
    for sid in subjects or store.subject_ids():
        rows = []
        for s, image, label in iter_subject_images(store, sid):
            key = (s["view"], s["frame"], s["slice_index"])
            meta = {k: v for k, v in s.items() if k not in ("part", "row")}
            rows.append((key, json.dumps(meta, sort_keys=True), image, label))
        rows.sort(key=lambda r: r[0])
        meta = dict(store.subject_meta(sid))
        meta.pop("ingest", None)  # where it was read from (paths), not what the subject is
        out[sid] = (meta, rows)
    return out


def rounded(obj, digits: int = 10):
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, digits) for v in obj]
    return obj


def assert_same_content(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for sid in a:
        (meta_a, rows_a), (meta_b, rows_b) = a[sid], b[sid]
        assert meta_a == meta_b, sid
        assert [r[:2] for r in rows_a] == [r[:2] for r in rows_b], sid
        for ra, rb in zip(rows_a, rows_b):
            np.testing.assert_array_equal(ra[2], rb[2])
            if ra[3] is None:
                assert rb[3] is None
            else:
                np.testing.assert_array_equal(ra[3], rb[3])


@pytest.fixture
def reader_registered():
    """Register test readers under a name for one test, then remove them."""
    added = []

    def add(name, cls):
        READERS.add(name, cls)
        added.append(name)

    yield add
    for name in added:
        READERS.unregister(name)


def test_auto_layout_ingests_every_subject_with_source_planes_and_writes_a_report(tmp_path):
    acdc_cohort(tmp_path / "src" / "training", [1, 2, 3])
    report = ingest(tmp_path / "src", tmp_path / "store", progress=False, **GRID)
    assert report.layout == "acdc" and report.layout_detected
    assert report.ok and sorted(report.ingested) == ["patient001", "patient002", "patient003"]
    store = CohortStore(tmp_path / "store")
    assert sorted(store.subject_ids()) == sorted(report.ingested)
    slices = store.subject_slices("patient002")
    assert len(slices) == 3 * 5 == report.slices / 3
    for s in slices:  # the stored source plane is the one the NIfTI header says
        k = s["slice_index"]
        np.testing.assert_allclose(s["source_plane"]["origin"], GEOM.world(0, 0, k), atol=1e-4)
        np.testing.assert_allclose(s["source_plane"]["row_dir"], GEOM.row_dir, atol=1e-6)
        np.testing.assert_allclose(s["source_plane"]["col_dir"], GEOM.col_dir, atol=1e-6)
        assert s["source_plane"]["pixel_spacing"] == pytest.approx([GEOM.row_spacing, GEOM.col_spacing])
        assert s["has_label"] == (s["phase"] in ("ed", "es"))
    assert store.fingerprint["subjects"] == 3  # refreshed at the end of the ingest
    saved = json.loads(Path(report.report_path).read_text())
    assert Path(report.report_path).parent == tmp_path / "store" / "ingest-reports"
    assert saved["ingested"] == report.ingested and saved["ok"] is True and saved["layout"] == "acdc"


def test_bad_subjects_are_skipped_with_reasons_and_nothing_stored_changes(tmp_path, reader_registered):
    src = tmp_path / "src"
    good = acdc_cohort(src / "training", [1, 2])
    ingest(src, tmp_path / "store", progress=False, **GRID)
    before = content(tmp_path / "store")

    bad = acdc_cohort(src / "training", [3, 4, 5, 6, 7, 8, 9]) | acdc_cohort(src / "testing", [9])
    truncate(bad[3]["folder"] / "patient003_frame02.nii.gz")
    f = bad[4]["folder"] / "patient004_frame01.nii.gz"
    save(bad[4]["frames"][1], GEOM.affine(), f, geometry=False)
    save(np.zeros((4, 4, 5), np.uint8), GEOM.affine(), bad[5]["folder"] / "patient005_frame01_gt.nii.gz")
    save(np.zeros(bad[6]["shape"], np.uint8), oblique(origin=(1, 2, 3)).affine(),
         bad[6]["folder"] / "patient006_frame02_gt.nii.gz")
    nan = bad[7]["frames"][2].astype(np.float32)
    nan[1, 2, 3] = np.nan
    save(nan, GEOM.affine(), bad[7]["folder"] / "patient007_frame02.nii.gz")
    (src / "training" / "patient002" / "patient002_4d.nii.gz").write_bytes(b"not gzip")  # already stored

    class WithUnsafeId(AcdcReader):
        def discover(self, root):
            return super().discover(root) + [SubjectSource("../x", root, (good[1]["folder"],))]

    reader_registered("acdc-unsafe-id", WithUnsafeId)
    report = ingest(src, tmp_path / "store", layout="acdc-unsafe-id", progress=False, **GRID)

    reasons = {s.subject_id: s.reason for s in report.skipped}
    assert set(reasons) == {"patient003", "patient004", "patient005", "patient006", "patient007",
                            "patient009", "../x"}
    assert "patient003_frame02.nii.gz" in reasons["patient003"] and "truncated" in reasons["patient003"]
    assert "no scanner geometry" in reasons["patient004"]
    assert "label shape" in reasons["patient005"]
    assert "label affine" in reasons["patient006"]
    assert "NaN" in reasons["patient007"]
    assert "duplicate subject id" in reasons["patient009"] and "testing" in reasons["patient009"]
    assert "invalid subject id" in reasons["../x"]
    assert all("\n" not in r for r in reasons.values())
    assert report.ingested == ["patient008"]
    assert sorted(report.already_present) == ["patient001", "patient002"]
    assert not report.ok
    store = CohortStore(tmp_path / "store")
    assert sorted(store.subject_ids()) == ["patient001", "patient002", "patient008"]
    assert_same_content(content(tmp_path / "store", ["patient001", "patient002"]), before)
    assert not (tmp_path / "x").exists() and not (tmp_path / "store" / "x").exists()
    saved = json.loads(Path(report.report_path).read_text())
    assert {s["subject_id"] for s in saved["skipped"]} == set(reasons) and saved["ok"] is False


def test_adding_subjects_to_an_existing_store_keeps_the_old_parts(tmp_path):
    src = tmp_path / "src"
    acdc_cohort(src, [1, 2])
    first = ingest(src, tmp_path / "store", progress=False, **GRID)
    before = content(tmp_path / "store")
    parts = CohortStore(tmp_path / "store").part_ids()
    acdc_cohort(src, [3, 4, 5])
    second = ingest(src, tmp_path / "store", workers=2, scheduler="threads", progress=False, **GRID)
    assert sorted(second.ingested) == ["patient003", "patient004", "patient005"]
    assert sorted(second.already_present) == sorted(first.ingested)
    store = CohortStore(tmp_path / "store")
    assert store.part_ids()[: len(parts)] == parts
    assert len(store.subject_ids()) == 5
    assert_same_content(content(tmp_path / "store", ["patient001", "patient002"]), before)
    assert len(list((tmp_path / "store" / "ingest-reports").glob("*.json"))) == 2


def test_layout_detection_and_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no registered layout recognises.*acdc.*mnms2"):
        ingest(tmp_path / "empty", tmp_path / "s1", progress=False)
    both = tmp_path / "both"
    acdc_cohort(both, [1])
    write_mnms2_subject(both, 1, oblique(), oblique(angles=(80, 0, 0)))
    with pytest.raises(IngestError, match="several layouts.*acdc.*mnms2.*--layout"):
        detect_layout(both)
    with pytest.raises(IngestError, match="--layout acdcc: unknown reader 'acdcc'.*did you mean 'acdc'"):
        ingest(both, tmp_path / "s2", layout="acdcc", progress=False)
    with pytest.raises(IngestError, match="not a folder"):
        ingest(tmp_path / "missing", tmp_path / "s3", progress=False)
    with pytest.raises(IngestError, match="inside the source"):
        ingest(both, both / "store", layout="acdc", progress=False)
    assert not any((tmp_path / s).exists() for s in ("s1", "s2", "s3")) and not (both / "store").exists()
    ingest(both, tmp_path / "s4", layout="mnms2", progress=False, **GRID)
    with pytest.raises(StoreError, match="grid"):
        ingest(both, tmp_path / "s4", layout="mnms2", progress=False, grid_size=48)


def test_a_layout_that_refines_another_wins_only_when_it_covers_every_subject(tmp_path, reader_registered):
    acdc_cohort(tmp_path / "src", [1, 2])

    class AcdcPlus(AcdcReader):  # a specific form of ACDC (as Sunnybrook is of DICOM)
        @classmethod
        def detect(cls, root):
            return super().detect(root)

    class FirstPatientOnly(AcdcReader):
        refines = ("acdc",)

        def discover(self, root):
            return super().discover(root)[:1]

    reader_registered("acdc-plus", AcdcPlus)
    assert detect_layout(tmp_path / "src") == "acdc-plus"
    reader_registered("acdc-first", FirstPatientOnly)  # now three match, none refines all others
    with pytest.raises(IngestError, match="several layouts"):
        detect_layout(tmp_path / "src")
    READERS.unregister("acdc-plus")
    with pytest.raises(IngestError, match="several layouts.*acdc.*acdc-first"):
        detect_layout(tmp_path / "src")  # it refines acdc but would leave patient002 behind


def test_a_record_the_store_refuses_is_skipped_and_the_rest_of_its_batch_stays_one_part(
    tmp_path, reader_registered
):
    class NoValidation(AcdcReader):  # a third-party reader that forgets to validate
        def read(self, source):
            rec = super().read(source)
            if rec.subject_id == "patient002":
                rec.slices[3].image[0, 0] = np.inf
            return rec

    reader_registered("acdc-novalidate", NoValidation)
    acdc_cohort(tmp_path / "src", [1, 2, 3])
    report = ingest(tmp_path / "src", tmp_path / "store", layout="acdc-novalidate", batch_size=3,
                    progress=False, **GRID)
    assert [(s.subject_id, "NaN or Inf" in s.reason) for s in report.skipped] == [("patient002", True)]
    assert sorted(report.ingested) == ["patient001", "patient003"] and len(report.parts) == 1


def _cli_app() -> typer.Typer:
    from cardiossl.platform.cli import ingest as command

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """cardiossl"""

    command.register(app)
    return app


def test_cli_prints_summary_and_exit_code_says_what_happened(tmp_path):
    runner = CliRunner()
    app = _cli_app()
    src = tmp_path / "src"
    cohort = acdc_cohort(src, [1, 2])
    base = ["ingest", str(src), "--out", str(tmp_path / "store")]
    args = base + ["--grid-size", "32", "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "layout: acdc (auto-detected)" in r.output and "ingested: 2 subjects" in r.output
    acdc_cohort(src, [3])
    truncate(cohort[1]["folder"] / "patient001_4d.nii.gz")  # already stored: not read again
    truncate(src / "patient003" / "patient003_frame01_gt.nii.gz")
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert "already present: 2" in r.output and "patient003: " in r.output
    r = runner.invoke(app, args[:-1] + ["--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["skipped"][0]["subject_id"] == "patient003"
    assert runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]).exit_code == 2
    assert runner.invoke(app, base + ["--layout", "nifti"]).exit_code == 2
    assert runner.invoke(app, base + ["--grid-size", "64"]).exit_code == 2
    assert runner.invoke(app, base + ["--grid-size", "32", "--workers", "0"]).exit_code == 2
    assert runner.invoke(app, ["ingest", str(src)]).exit_code == 2  # --out missing


def test_synthetic_nifti_layout_ingested_equals_the_direct_store(tmp_path):
    """What `cardiossl synth --format nifti` writes, ingested, equals what `--format zarr` stores.

    One generated subject goes both ways exactly as the synth command sends it (the UK Biobank-like
    writer, or straight into the store), then `cardiossl ingest` reads the NIfTI folder.
    """
    from cardiossl.datasets.readers.nifti_export import write_export_subject
    from cardiossl.datasets.synthetic import subject_id_for, synth_subject
    from cardiossl.platform.cli import app

    record = synth_subject(subject_id_for(0, 1), 5, n_frames=2, index=0)
    write_export_subject(record, tmp_path / "nifti")
    CohortStore.create(tmp_path / "direct", grid_size=48).write_subjects([record])
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "nifti"), "--out", str(tmp_path / "ingested"),
                                 "-q", "--grid-size", "48"])
    assert r.exit_code == 0, r.output
    assert "layout: cardiossl-nifti (auto-detected)" in r.output
    origin = CohortStore(tmp_path / "ingested").subject_meta(record.subject_id)["ingest"]
    assert origin["layout"] == "cardiossl-nifti" and all(Path(p).exists() for p in origin["paths"])
    direct, ingested = content(tmp_path / "direct"), content(tmp_path / "ingested")
    assert sorted(direct) == sorted(ingested) == [record.subject_id]
    for sid in direct:
        (meta_d, rows_d), (meta_i, rows_i) = direct[sid], ingested[sid]
        order_keys = ("sa_order", "sa_normal_base_to_apex")  # what the reader adds: its geometric order
        assert meta_d == {k: v for k, v in meta_i.items() if k not in order_keys}
        assert meta_i["sa_order"].startswith("base to apex")
        assert [r[0] for r in rows_d] == [r[0] for r in rows_i]
        assert {r[0][0] for r in rows_d} == {"sa", "2ch", "3ch", "4ch"}
        for (key, md, img_d, lab_d), (_, mi, img_i, lab_i) in zip(rows_d, rows_i):
            md, mi = json.loads(md), json.loads(mi)
            for k in ("phase", "has_label", "source_shape", "grid_shape"):
                assert md[k] == mi[k], (sid, key, k)
            assert md["stack_position"] == pytest.approx(mi["stack_position"], nan_ok=True)
            for plane in ("plane", "source_plane"):  # NIfTI headers hold float32: ~1e-5 mm
                for k in ("origin", "row_dir", "col_dir", "pixel_spacing"):
                    np.testing.assert_allclose(md[plane][k], mi[plane][k], atol=1e-4, err_msg=str(key))
            # equal up to one int16 quantisation step of the store (range / 65534)
            np.testing.assert_allclose(img_d, img_i, atol=np.ptp(img_d) / 65534 * 1.5 + 1e-6)
            np.testing.assert_array_equal(lab_d, lab_i)


KILLED_INGEST = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {helpers!r})
    from nifti_cohorts import SlowAcdcReader
    from cardiossl.datasets.ingest import ingest
    from cardiossl.datasets.readers import READERS

    READERS.add("acdc-slow", SlowAcdcReader)
    if __name__ == "__main__":
        ingest({src!r}, {store!r}, layout="acdc-slow", workers=2, batch_size=1, progress=False,
               grid_size=32, spacing_mm=2.0)
    """
)


def test_killed_ingest_resumes_to_the_store_of_an_uninterrupted_run(tmp_path):
    src = tmp_path / "src"
    acdc_cohort(src, range(1, 7))
    store = tmp_path / "store"
    script = tmp_path / "run.py"
    script.write_text(KILLED_INGEST.format(helpers=str(Path(__file__).parent / "readers"),
                                           src=str(src), store=str(store)))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (store / "commits").is_dir() and any((store / "commits").glob("*.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes, mid-way
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()

    landed = CohortStore(store).subject_ids()
    assert 0 < len(landed) < 6
    for sid in landed:  # whatever is visible is whole
        assert len(CohortStore(store).subject_slices(sid)) == 3 * 5

    dead = store / "parts" / "p-killed-writer"  # what a writer killed mid-part an hour ago leaves behind
    (dead / "image").mkdir(parents=True, exist_ok=True)
    hour_ago = time.time() - 3600
    (dead / ".lease").write_text(json.dumps({"token": "t", "host": "elsewhere", "pid": 1, "heartbeat": hour_ago,
                                             "lease_s": 900.0}))
    os.utime(dead / ".lease", (hour_ago, hour_ago))
    resumed = ingest(src, store, progress=False, **GRID)
    assert "p-killed-writer" in resumed.removed_incomplete_parts and not dead.exists()
    assert sorted(resumed.already_present) == sorted(landed)
    assert sorted(resumed.ingested) == sorted(set(f"patient{i:03d}" for i in range(1, 7)) - set(landed))
    assert resumed.ok
    reference = ingest(src, tmp_path / "reference", progress=False, **GRID)
    assert_same_content(content(store), content(tmp_path / "reference"))
    a, b = CohortStore(store).fingerprint, CohortStore(tmp_path / "reference").fingerprint
    for key in ("subjects", "slices", "views", "intensity", "labelled_subjects", "sa_slice_gap_mm"):
        assert rounded(a[key]) == rounded(b[key]), key  # pooled in commit order: last-bit differences
    # the same data: the same content hash, however it was cut into parts and whenever it was written
    assert a["content_hash"] == b["content_hash"] == CohortStore(store).snapshot().content_hash
    assert len(reference.parts) < len(CohortStore(store).part_ids())  # the runs did differ in parts
    assert reference.scheduler == "sync"  # and the killed one ran in a dask process pool


def test_a_reingest_that_adds_nothing_leaves_the_fingerprint_and_its_hash_unchanged(tmp_path):
    """Defect 7: the fingerprint held ``updated_at``, so its hash changed on every ingest and a
    registered encoder was never found again by it."""
    from cardiossl.platform.tracking import fingerprint_hash

    src = tmp_path / "src"
    acdc_cohort(src, [1, 2])
    ingest(src, tmp_path / "store", progress=False, **GRID)
    first = CohortStore(tmp_path / "store").fingerprint
    time.sleep(1.1)  # a later second
    again = ingest(src, tmp_path / "store", progress=False, **GRID)
    assert again.ingested == [] and sorted(again.already_present) == ["patient001", "patient002"]
    second = CohortStore(tmp_path / "store").fingerprint
    assert second == first and "updated_at" not in second
    assert fingerprint_hash(second) == fingerprint_hash(first) == second["content_hash"][:16]
    acdc_cohort(src, [3])
    ingest(src, tmp_path / "store", progress=False, **GRID)
    assert fingerprint_hash(CohortStore(tmp_path / "store").fingerprint) != fingerprint_hash(first)


DYING_INGEST = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {helpers!r})
    from nifti_cohorts import DyingAcdcReader
    from cardiossl.datasets.readers import READERS
    from cardiossl.platform.cli import app

    READERS.add("acdc-dying", DyingAcdcReader)
    if __name__ == "__main__":
        app(["ingest", {src!r}, "--out", {store!r}, "--layout", "acdc-dying", "--workers", "2",
             "--batch-size", "2", "--grid-size", "32", "--spacing-mm", "2", "--quiet"])
    """
)


def test_a_worker_process_that_dies_costs_only_the_subject_it_was_reading(tmp_path):
    """Defect 6: a killed ingest worker aborted a local ingest with a BrokenProcessPool traceback,
    no report, another valid batch lost and the culprit not named."""
    src = tmp_path / "src"
    acdc_cohort(src, range(1, 7))
    store = tmp_path / "store"
    script = tmp_path / "run.py"
    script.write_text(DYING_INGEST.format(helpers=str(Path(__file__).parent / "readers"), src=str(src),
                                          store=str(store)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr  # the exit code says: something was skipped
    assert "Traceback" not in out.stdout + out.stderr
    assert "skipped: 1" in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.strip().startswith("patient002:"))
    assert "worker process died while reading it" in line and "exit code 3" in line
    report = json.loads(Path(next(x for x in out.stdout.splitlines() if x.startswith("report: "))[8:]).read_text())
    assert [s["subject_id"] for s in report["skipped"]] == ["patient002"]
    expected = sorted(f"patient{i:03d}" for i in (1, 3, 4, 5, 6))  # patient001 shared its batch
    assert sorted(report["ingested"]) == expected == sorted(CohortStore(store).subject_ids())


# --------------------------------------------------------------------------------------------
# Ray: the session's real local cluster (tests/conftest.py `ray_cluster`)


@pytest.mark.ray
def test_ray_tasks_ingest_equals_local_ingest(tmp_path, ray_cluster):
    src = tmp_path / "src"
    acdc_cohort(src, [1, 2, 3, 4, 5])
    truncate(src / "patient004" / "patient004_frame01.nii.gz")
    address = ray_cluster.gcs_address
    report = ingest(src, tmp_path / "ray", ray_address=address, batch_size=2, progress=False, **GRID)
    assert report.scheduler == "ray" and len(report.parts) == 3
    assert sorted(report.ingested) == ["patient001", "patient002", "patient003", "patient005"]
    assert [s.subject_id for s in report.skipped] == ["patient004"]
    assert "truncated" in report.skipped[0].reason
    writers = {json.loads((tmp_path / "ray" / "parts" / p / "zarr.json").read_text())["attributes"]
               ["cardiossl_part"]["written_by"]["pid"] for p in report.parts}
    assert os.getpid() not in writers  # the parts were written by Ray workers, not by this driver
    local = ingest(src, tmp_path / "local", progress=False, **GRID)
    assert_same_content(content(tmp_path / "ray"), content(tmp_path / "local"))
    # a second run on the cluster only retries the bad subject
    again = ingest(src, tmp_path / "ray", ray_address=address, progress=False, **GRID)
    assert again.ingested == [] and len(again.already_present) == 4 and not local.ok
