from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_cohorts import KnownGeometry, oblique, save, short_axis, truncate, write_acdc_patient, write_mnms2_subject

from cardiossl.datasets.readers import READERS, ReadError
from cardiossl.datasets.readers.acdc import AcdcReader
from cardiossl.datasets.records import RecordError


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "ACDC" / "database"
    geom = short_axis()
    truth = write_acdc_patient(root / "training", 1, geom, ed=1, es=3, seed=1)
    write_acdc_patient(root / "testing", 101, short_axis(twist=-70, row_spacing=1.1, col_spacing=1.6),
                       cine=False, ed=2, es=4, seed=2)
    return tmp_path / "ACDC", truth


def read(root, sid):
    reader = AcdcReader()
    (src,) = [s for s in reader.discover(root) if s.subject_id == sid]
    return reader.read(src)


def test_registered_and_detects_only_acdc(cohort, tmp_path):
    root, _ = cohort
    assert READERS.get("acdc") is AcdcReader
    assert AcdcReader.detect(root)
    assert [s.subject_id for s in AcdcReader().discover(root)] == ["patient001", "patient101"]
    other = tmp_path / "mnms2"
    write_mnms2_subject(other, 1, oblique(), oblique(angles=(80, 10, 0)))
    assert not AcdcReader.detect(other)
    assert not AcdcReader.detect(tmp_path / "ACDC" / "database" / "training" / "patient001")


def test_planes_pixels_labels_and_frames_match_the_files(cohort):
    root, truth = cohort
    rec = read(root, "patient001")
    geom, (nx, ny, nz) = truth["geom"], truth["shape"]
    assert len(rec.slices) == 4 * nz  # every cine frame of the 4-D file
    assert rec.meta["ed_frame"] == 0 and rec.meta["es_frame"] == 2
    assert rec.meta["group"] == "NOR" and rec.meta["height_cm"] == 172.0
    for s in rec.slices:
        k, n = s.slice_index, s.frame + 1
        assert s.view == "sa"
        assert s.image.shape == (ny, nx)  # rows = NIfTI j, columns = NIfTI i
        np.testing.assert_array_equal(s.image, truth["frames"][n][:, :, k].T.astype(np.float32))
        # non-square pixels: row spacing 1.8 mm, column spacing 1.3 mm
        assert s.plane.spacing == pytest.approx((geom.row_spacing, geom.col_spacing))
        for r, c in ((0, 0), (ny - 1, 0), (0, nx - 1), (7, 11)):
            np.testing.assert_allclose(s.plane.pixel_to_world(r, c), geom.world(r, c, k), atol=1e-4)
        assert s.stack_position == pytest.approx(k / (nz - 1))
        assert s.phase == {1: "ed", 3: "es"}.get(n, "")
        if s.phase:
            # ACDC 1 RV / 3 LV were swapped into ours: 1 LV, 3 RV
            np.testing.assert_array_equal(s.label, truth["labels"][n][:, :, k].T)
            assert 1 in s.label
        else:
            assert s.label is None


def test_oblique_apex_first_files_are_stored_base_first_by_geometry(tmp_path):
    geom = short_axis(apex_first=True)
    truth = write_acdc_patient(tmp_path, 5, geom, seed=3)
    rec = read(tmp_path, "patient005")
    nz = truth["shape"][2]
    assert rec.meta["sa_order"].startswith("base to apex")
    for s in rec.slices:
        k_file = nz - 1 - s.slice_index
        np.testing.assert_array_equal(s.image, truth["frames"][s.frame + 1][:, :, k_file].T.astype(np.float32))
        np.testing.assert_allclose(s.plane.origin, geom.world(0, 0, k_file), atol=1e-4)
        assert s.stack_position == pytest.approx(s.slice_index / (nz - 1))


def test_identity_affine_with_pixdim_spacing_keeps_file_order_like_real_acdc(tmp_path):
    """ACDC's own files: sform code 2 with 1 mm identity directions, voxel sizes only in pixdim."""
    geom = KnownGeometry(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 1.0, 1.0, 1.0)
    truth = write_acdc_patient(tmp_path, 7, geom, cine=False, seed=4)
    for p in truth["folder"].glob("*.nii.gz"):
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
        out = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
        out.header.set_zooms((1.5625, 1.5625, 10.0))
        out.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
        out.set_qform(None, code=0)
        nib.save(out, str(p))
    rec = read(tmp_path, "patient007")
    assert rec.meta["sa_order"].startswith("assumed: file order")
    assert any("pixdim" in n for n in rec.meta["notes"])
    nz = truth["shape"][2]
    for s in rec.slices:
        assert s.plane.spacing == pytest.approx((1.5625, 1.5625))
        np.testing.assert_allclose(s.plane.origin, [0.0, 0.0, 10.0 * s.slice_index], atol=1e-6)
        np.testing.assert_allclose(s.plane.row_dir, [1, 0, 0], atol=1e-9)  # RAS -x is LPS +x
        assert s.stack_position == pytest.approx(s.slice_index / (nz - 1))


def test_without_cine_only_ed_and_es_with_their_frame_numbers(cohort):
    root, _ = cohort
    rec = read(root, "patient101")
    assert sorted({(s.frame, s.phase) for s in rec.slices}) == [(1, "ed"), (3, "es")]
    assert all(s.label is not None for s in rec.slices)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f, t: truncate(f / "patient001_frame03.nii.gz"), "corrupt or truncated"),
        (lambda f, t: save(t["frames"][1], t["geom"].affine(), f / "patient001_frame01.nii.gz",
                           geometry=False), "no scanner geometry"),
        (lambda f, t: save(np.zeros((5, 5, 5), np.uint8), t["geom"].affine(),
                           f / "patient001_frame01_gt.nii.gz"), "label shape"),
        (lambda f, t: save(np.zeros(t["shape"], np.uint8), oblique(origin=(0, 0, 0)).affine(),
                           f / "patient001_frame01_gt.nii.gz"), "label affine"),
        (lambda f, t: save(np.full(t["shape"], 7, np.uint8), t["geom"].affine(),
                           f / "patient001_frame01_gt.nii.gz"), "no meaning"),
        (lambda f, t: (f / "Info.cfg").write_text("Group: NOR\n"), "ED:"),
        (lambda f, t: (f / "patient001_frame01.nii.gz").unlink() or (f / "patient001_4d.nii.gz").unlink(),
         "no image for frame 1"),
    ],
    ids=["truncated", "no-geometry", "label-shape", "label-affine", "label-values", "info-cfg",
         "missing-frame"],
)
def test_bad_files_raise_read_error_naming_the_file(cohort, damage, message):
    root, truth = cohort
    damage(truth["folder"], truth)
    with pytest.raises(ReadError, match=message):
        read(root, "patient001")


def test_nan_pixels_are_refused(cohort):
    root, truth = cohort
    img = truth["frames"][3].astype(np.float32)
    img[3, 4, 2] = np.nan
    save(img, truth["geom"].affine(), truth["folder"] / "patient001_frame03.nii.gz")
    with pytest.raises(RecordError, match="NaN"):
        read(root, "patient001")


def test_detect_on_missing_folder_is_false(tmp_path):
    assert not AcdcReader.detect(Path(tmp_path / "nope"))


ACDC_DEV = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "real" / "acdc-dev"


def centroid_world(mask, plane: dict) -> np.ndarray:
    """World centroid (LPS mm) of a mask on the image whose plane is ``plane`` (a to_dict record)."""
    from cardiossl.datasets.geometry import Plane

    p = Plane(plane["origin"], plane["row_dir"], plane["col_dir"], plane["pixel_spacing"])
    r, c = np.nonzero(mask)
    return p.pixel_to_world(r.mean(), c.mean())


@pytest.mark.real
@pytest.mark.skipif(not ACDC_DEV.is_dir(), reason="real ACDC cases not available (../shared/data/real/acdc-dev)")
def test_real_acdc_dev_ingests_with_the_planes_and_labels_of_its_headers(tmp_path):
    """The 20 real patients: stored planes are the headers' (voxel sizes from pixdim, the sform's
    directions), labels keep their areas in mm^2 per class under the ACDC -> ours remap, ED/ES frames
    follow Info.cfg, and the assumed base-first file order holds on every patient's labels."""
    from cardiossl.datasets.ingest import ingest
    from cardiossl.datasets.readers.acdc import parse_info_cfg
    from cardiossl.datasets.store import CohortStore

    report = ingest(ACDC_DEV, tmp_path / "acdc.zarr", layout="acdc", workers=1, grid_size=224, spacing_mm=1.8,
                    progress=False)
    store = CohortStore(tmp_path / "acdc.zarr")
    patients = sorted(p.name for p in ACDC_DEV.glob("patient*"))
    assert len(patients) == 20 and sorted(store.subject_ids()) == patients and not report.skipped
    for sid in patients:
        folder = ACDC_DEV / sid
        cfg = parse_info_cfg(folder / "Info.cfg")
        meta = store.subject_meta(sid)
        assert (meta["ed_frame"], meta["es_frame"]) == (int(cfg["ED"]) - 1, int(cfg["ES"]) - 1)
        assert meta["sa_order"].startswith("assumed: file order")
        ed_img = nib.load(str(folder / f"{sid}_frame{int(cfg['ED']):02d}.nii.gz"))
        zooms = np.asarray(ed_img.header.get_zooms()[:3], float)
        lps = np.diag([-1.0, -1.0, 1.0]) @ ed_img.affine[:3, :3]
        row_dir, col_dir = lps[:, 0] / np.linalg.norm(lps[:, 0]), lps[:, 1] / np.linalg.norm(lps[:, 1])
        nx, ny, nz = ed_img.shape
        gts = {}
        for phase, frame in (("ed", cfg["ED"]), ("es", cfg["ES"])):
            gts[phase] = np.asarray(nib.load(str(folder / f"{sid}_frame{int(frame):02d}_gt.nii.gz")).dataobj)
        volume, total = {1: 0.0, 2: 0.0, 3: 0.0}, {1: 0.0, 2: 0.0, 3: 0.0}
        for s in store.subject_slices(sid):
            _, label = store.read_slice(s["part"], s["row"])
            k = s["slice_index"]
            src = s["source_plane"]
            assert s["source_shape"] == [ny, nx]
            assert src["pixel_spacing"] == pytest.approx([zooms[1], zooms[0]])
            np.testing.assert_allclose(src["row_dir"], row_dir, atol=1e-6)
            np.testing.assert_allclose(src["col_dir"], col_dir, atol=1e-6)
            np.testing.assert_allclose(src["origin"], np.diag([-1.0, -1.0, 1.0]) @ ed_img.affine[:3, 3]
                                       + k * zooms[2] * np.cross(row_dir, col_dir), atol=1e-4)
            assert s["has_label"] == (label is not None)
            gt = gts[s["phase"]][:, :, k].T  # (rows, cols) as the source image
            for ours, acdc in ((1, 3), (2, 2), (3, 1)):  # ours 1 LV, 2 MYO, 3 RV; ACDC 1 RV, 2 MYO, 3 LV
                volume[ours] += (label == ours).sum() * 1.8 * 1.8 - (gt == acdc).sum() * zooms[0] * zooms[1]
                total[ours] += (gt == acdc).sum() * zooms[0] * zooms[1]
                if (gt == acdc).sum() * zooms[0] * zooms[1] > 300.0:  # where the class is 300 mm^2 or more
                    src_c = centroid_world(gt == acdc, src)
                    grid_c = centroid_world(label == ours, s["plane"])
                    assert np.linalg.norm(src_c - grid_c) < max(zooms[0], 1.8), (sid, k, ours)  # a pixel
        for ours in (1, 2, 3):  # nearest-neighbour resampling keeps each structure's volume
            assert abs(volume[ours]) < 0.03 * total[ours], (sid, ours)
        area = [(gts["ed"][:, :, k] > 0).sum() for k in range(nz)]
        assert sum(area[: nz // 2]) > sum(area[(nz + 1) // 2:]), f"{sid}: not base first"
