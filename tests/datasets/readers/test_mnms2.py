import numpy as np
import pytest
from nifti_cohorts import long_axis_plane, oblique, save, short_axis, truncate, write_acdc_patient, write_mnms2_subject

from cardiossl.datasets.readers import READERS, ReadError
from cardiossl.datasets.readers.mnms2 import MnMs2Reader

SA = short_axis(origin=(-20.0, 15.0, 60.0), twist=40.0, row_spacing=1.25, col_spacing=1.6, step=10.0)
SA_APEX_FIRST = short_axis(origin=(-20.0, 15.0, 60.0), twist=40.0, row_spacing=1.25, col_spacing=1.6,
                           step=10.0, apex_first=True)
LA = long_axis_plane(SA, angle=-20.0)


def read(root, sid):
    reader = MnMs2Reader()
    (src,) = [s for s in reader.discover(root) if s.subject_id == sid]
    return reader.read(src)


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "MnM2" / "dataset"
    t1 = write_mnms2_subject(root, 1, SA, LA, seed=1)
    t2 = write_mnms2_subject(root, 2, SA_APEX_FIRST, LA, apex_first=True, seed=2, cine=False, ed=0, es=2)
    return tmp_path / "MnM2", t1, t2


def check_plane(s, geom, k):
    rows, cols = s.image.shape
    assert s.plane.spacing == pytest.approx((geom.row_spacing, geom.col_spacing))
    for r, c in ((0, 0), (rows - 1, 0), (0, cols - 1), (5, 9)):
        np.testing.assert_allclose(s.plane.pixel_to_world(r, c), geom.world(r, c, k), atol=1e-4)


def test_registered_and_detects_only_mnms2(cohort, tmp_path):
    root, _, _ = cohort
    assert READERS.get("mnms2") is MnMs2Reader
    assert MnMs2Reader.detect(root)
    assert [s.subject_id for s in MnMs2Reader().discover(root)] == ["001", "002"]
    acdc = tmp_path / "acdc"
    write_acdc_patient(acdc, 1, oblique())
    assert not MnMs2Reader.detect(acdc)


def test_sa_and_4ch_planes_pixels_labels_and_cine_frames(cohort):
    root, t, _ = cohort
    rec = read(root, "001")
    nx, ny, nz = t["shape"]
    sa = [s for s in rec.slices if s.view == "sa"]
    la = [s for s in rec.slices if s.view == "4ch"]
    assert len(sa) == 5 * nz and len(la) == 5
    assert rec.meta["ed_frame"] == 1 and rec.meta["es_frame"] == 3  # found in the cine by pixels
    assert rec.meta["la_ed_frame"] == 1 and rec.meta["la_es_frame"] == 3
    assert rec.meta["sa_order"].startswith("base to apex")
    assert "projected into the long-axis plane" in rec.meta["sa_order"]
    for s in sa:
        k = s.slice_index
        np.testing.assert_array_equal(s.image, t["sa_frames"][s.frame][:, :, k].T.astype(np.float32))
        check_plane(s, SA, k)
        assert s.stack_position == pytest.approx(k / (nz - 1))
        assert s.phase == {1: "ed", 3: "es"}.get(s.frame, "")
        if s.phase:
            np.testing.assert_array_equal(s.label, t["sa_labels"][s.frame][:, :, k].T)  # unchanged
        else:
            assert s.label is None
    for s in la:
        assert s.slice_index == 0 and np.isnan(s.stack_position)
        np.testing.assert_array_equal(s.image, t["la_frames"][s.frame][:, :, 0].T.astype(np.float32))
        check_plane(s, LA, 0)
        assert (s.label is not None) == (s.frame in (1, 3))
    # the LA plane is oblique to the SA stack: their normals are far from parallel
    assert not sa[0].plane.is_parallel(la[0].plane, tol_deg=20)


def test_apex_first_files_are_stored_base_first_by_geometry(cohort):
    root, _, t = cohort
    rec = read(root, "002")
    nz = t["shape"][2]
    assert rec.meta["sa_order"].startswith("base to apex")
    assert sorted({s.frame for s in rec.slices}) == [0, 1]  # no cine: ED = 0, ES = 1
    for s in (s for s in rec.slices if s.view == "sa"):
        k_file = nz - 1 - s.slice_index
        src = t["sa_frames"][t["ed"] if s.phase == "ed" else t["es"]]
        np.testing.assert_array_equal(s.image, src[:, :, k_file].T.astype(np.float32))
        check_plane(s, SA_APEX_FIRST, k_file)
    ed = [s for s in rec.slices if s.view == "sa" and s.phase == "ed"]
    areas = [int((s.label > 0).sum()) for s in sorted(ed, key=lambda s: s.slice_index)]
    assert areas[0] > areas[-1]  # slice 0 is the (wide) base: the geometry agreed with the anatomy


def test_order_does_not_depend_on_labels(tmp_path):
    """The same apex-first files with and without labels: the same order, from geometry alone."""
    write_mnms2_subject(tmp_path / "a", 7, SA_APEX_FIRST, LA, apex_first=True, labels=False, seed=3)
    write_mnms2_subject(tmp_path / "b", 7, SA_APEX_FIRST, LA, apex_first=True, labels=True, seed=3)
    key = lambda r: [(s.slice_index, s.frame, s.stack_position, s.image.tobytes()) for s in r.slices if s.view == "sa"]  # noqa: E731
    a, b = read(tmp_path / "a", "007"), read(tmp_path / "b", "007")
    assert key(a) == key(b)
    assert all(s.label is None for s in a.slices)
    assert [s.stack_position for s in a.slices if s.view == "sa" and s.frame == 0] == pytest.approx(
        [k / 5 for k in range(6)])


def test_ed_volume_not_in_cine_is_refused(cohort):
    root, t, _ = cohort
    other = np.random.default_rng(5).integers(0, 900, t["shape"]).astype(np.int16)
    save(other, SA.affine(), t["folder"] / "001_SA_ED.nii.gz")
    with pytest.raises(ReadError, match="matches no frame"):
        read(root, "001")


@pytest.mark.parametrize("name", ["001_LA_ES.nii.gz", "001_SA_CINE.nii.gz", "001_SA_ED_gt.nii.gz"])
def test_truncated_files_are_read_errors_naming_the_file(cohort, name):
    root, t, _ = cohort
    truncate(t["folder"] / name)
    with pytest.raises(ReadError, match=name):
        read(root, "001")


def test_label_with_another_affine_is_refused(cohort):
    root, t, _ = cohort
    save(t["la_labels"][1], SA.affine(), t["folder"] / "001_LA_ED_gt.nii.gz")
    with pytest.raises(ReadError, match="label"):
        read(root, "001")
