"""The real UK Biobank layout (Bai et al.'s ukbb_cardiac conversion): every naming variant, built by hand."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nifti_cohorts import RAS_FROM_LPS, save
from ukbb_folders import write_ukbb_subject

from cardiossl.datasets.ingest import detect_layout
from cardiossl.datasets.readers import READERS, ReadError
from cardiossl.datasets.readers.nifti_export import write_export_subject
from cardiossl.datasets.readers.ukbb import UKBBReader
from cardiossl.datasets.synthetic import synth_subject


def read(root, eid="1000001"):
    reader = UKBBReader()
    (src,) = [s for s in reader.discover(root) if s.subject_id == eid]
    return reader.read(src)


def by_view(rec, view):
    return sorted((s for s in rec.slices if s.view == view), key=lambda s: (s.frame, s.slice_index))


def check_plane(s, geom, k):
    rows, cols = s.image.shape
    assert s.plane.spacing == pytest.approx((geom.row_spacing, geom.col_spacing))
    for r, c in ((0, 0), (rows - 1, 0), (0, cols - 1), (3, 5)):
        np.testing.assert_allclose(s.plane.pixel_to_world(r, c), geom.world(r, c, k), atol=1e-4)


def test_full_subject_cine_phases_manual_sa_labels_seg4_and_every_la_view(tmp_path):
    t = write_ukbb_subject(tmp_path)
    rec = read(tmp_path)
    nz = t.sa_frames[0].shape[2]
    assert rec.meta["layout"] == "ukbb" and rec.meta["views"] == ["sa", "2ch", "3ch", "4ch"]
    assert rec.meta["ed_frame"] == 0 and rec.meta["es_frame"] == t.es  # sa_ES found in the cine by pixels
    assert rec.meta["sa_order"].startswith("base to apex") and "common line of 3" in rec.meta["sa_order"]
    sa = by_view(rec, "sa")
    assert len(sa) == 5 * nz
    for s in sa:
        k = s.slice_index  # written base first: the file order is the geometric order
        np.testing.assert_array_equal(s.image, t.sa_frames[s.frame][:, :, k].T.astype(np.float32))
        check_plane(s, t.sa, k)
        assert s.stack_position == pytest.approx(k / (nz - 1))
        assert s.phase == {0: "ed", t.es: "es"}.get(s.frame, "")
        if s.phase:
            np.testing.assert_array_equal(s.label, t.sa_labels[s.frame][:, :, k].T)  # same convention
        else:
            assert s.label is None
    assert rec.meta["labels"]["sa"] == {"source": "manual", "files": ["label_sa_ED.nii.gz", "label_sa_ES.nii.gz"],
                                        "frames": [0, t.es]}
    for view in ("2ch", "3ch", "4ch"):  # (x, y, 1, t) files: one LA slice per frame
        la = by_view(rec, view)
        assert [s.frame for s in la] == list(range(5)) and {s.slice_index for s in la} == {0}
        for s in la:
            np.testing.assert_array_equal(s.image, t.la_frames[view][s.frame][:, :, 0].T.astype(np.float32))
            check_plane(s, t.la[view], 0)
            assert np.isnan(s.stack_position)
    # seg4: LV/Myo/RV kept, the atria (4 LA, 5 RA) become background, never a ventricle
    four = by_view(rec, "4ch")
    for s in four:
        if s.frame in (0, t.es):
            src = t.la_seg4[s.frame][:, :, 0].T
            np.testing.assert_array_equal(s.label, np.where(src >= 4, 0, src))
            assert (s.label[src >= 4] == 0).all() and set(np.unique(s.label)) == {0, 1, 2, 3}
        else:
            assert s.label is None
    assert rec.meta["labels"]["4ch"]["source"] == "automatic"
    assert rec.meta["label_source"] == "automatic+manual"
    # atrium-only files (seg_la_2ch: 1 LA; seg_la_4ch: 1 LA, 2 RA) are not stored as labels
    assert all(s.label is None for s in by_view(rec, "2ch")) and "2ch" not in rec.meta["labels"]
    notes = "\n".join(rec.meta["notes"])
    assert "seg_la_2ch.nii.gz: atrial labels" in notes and "seg_la_4ch.nii.gz" not in rec.meta["labels"]["4ch"]["files"]
    assert "ao.nii.gz: aortic distensibility cine ignored" in notes


def test_ed_es_only_with_automatic_labels_and_no_la(tmp_path):
    t = write_ukbb_subject(tmp_path, cine=False, sa_labels="automatic", la_views=(), ao=False)
    rec = read(tmp_path)
    assert rec.meta["views"] == ["sa"] and rec.meta["ed_frame"] == 0 and rec.meta["es_frame"] == 1
    assert rec.meta["label_source"] == "automatic" and "notes" not in rec.meta
    assert rec.meta["sa_order"].startswith("base to apex") and "SA stack normal" in rec.meta["sa_order"]
    for s in by_view(rec, "sa"):
        src = t.sa_frames[0 if s.frame == 0 else t.es]
        np.testing.assert_array_equal(s.image, src[:, :, s.slice_index].T.astype(np.float32))
        assert s.phase == ("ed", "es")[s.frame] and s.label is not None


def test_cine_with_automatic_4d_segmentation_labels_every_frame(tmp_path):
    t = write_ukbb_subject(tmp_path, ed_es=False, sa_labels="automatic", label_4d=True, la_views=("4ch",), seg4=False)
    rec = read(tmp_path)
    assert rec.meta["es_frame"] is None  # no sa_ES file: end-systole is not guessed
    assert rec.meta["labels"]["sa"] == {"source": "automatic", "files": ["seg_sa.nii.gz"], "frames": [0, 1, 2, 3, 4]}
    for s in by_view(rec, "sa"):
        np.testing.assert_array_equal(s.label, t.sa_labels[s.frame][:, :, s.slice_index].T)
    assert rec.meta["views"] == ["sa", "4ch"]  # one LA view, as in M&Ms-2
    assert "projected into the long-axis plane" in rec.meta["sa_order"]
    assert any("seg_la_4ch.nii.gz: atrial labels (1 left atrium, 2 right atrium)" in n for n in rec.meta["notes"])


def test_manual_4d_label_file_labels_only_its_annotated_frames(tmp_path):
    t = write_ukbb_subject(tmp_path, label_4d=True, la_views=("2ch", "4ch"))
    rec = read(tmp_path)
    assert rec.meta["labels"]["sa"]["frames"] == [0, t.es] and rec.meta["labels"]["sa"]["source"] == "manual"
    labelled = sorted({s.frame for s in by_view(rec, "sa") if s.label is not None})
    assert labelled == [0, t.es]


def test_apex_first_stack_is_stored_base_first_from_geometry(tmp_path):
    t = write_ukbb_subject(tmp_path, apex_first=True, la_views=("2ch", "4ch"))
    rec = read(tmp_path)
    nz = t.sa_frames[0].shape[2]
    for s in by_view(rec, "sa"):
        k_file = nz - 1 - s.slice_index
        np.testing.assert_array_equal(s.image, t.sa_frames[s.frame][:, :, k_file].T.astype(np.float32))
        check_plane(s, t.sa, k_file)
    ed = [s for s in by_view(rec, "sa") if s.frame == 0]
    assert (ed[0].label > 0).sum() > (ed[-1].label > 0).sum()  # slice 0 is the wide base


def test_detection_tells_the_real_layout_from_the_cardiossl_export(tmp_path):
    write_ukbb_subject(tmp_path / "ukbb")
    write_export_subject(synth_subject("synth00001", 0, n_frames=2, n_sub=1), tmp_path / "export")
    assert detect_layout(tmp_path / "ukbb") == "ukbb"
    assert detect_layout(tmp_path / "ukbb" / "1000001") == "ukbb"
    assert detect_layout(tmp_path / "export") == "cardiossl-nifti"
    assert not UKBBReader.detect(tmp_path / "export")
    assert not READERS.get("cardiossl-nifti").detect(tmp_path / "ukbb")
    assert UKBBReader().discover(tmp_path / "export") == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f, t: save(t.la_frames["2ch"][0].repeat(3, axis=2), t.la["2ch"].affine(), f / "la_2ch.nii.gz"),
         r"la_2ch\.nii\.gz: a long-axis cine is 4-D \(x, y, 1, frame\)"),
        (lambda f, t: save(np.full(t.la_seg4[0].shape, 6.0), t.la["4ch"].affine(), f / "seg4_la_4ch_ED.nii.gz"),
         r"seg4_la_4ch_ED\.nii\.gz: label values \[6\]"),
        (lambda f, t: save(t.sa_labels[0], t.la["2ch"].affine(), f / "label_sa_ED.nii.gz"),
         r"label_sa_ED\.nii\.gz: label affine differs"),
        (lambda f, t: save(t.sa_frames[0] + 300, t.sa.affine(), f / "sa_ES.nii.gz"),
         r"sa_ES\.nii\.gz: matches no frame of sa\.nii\.gz"),
        (lambda f, t: (f / "sa.nii.gz").write_bytes((f / "sa.nii.gz").read_bytes()[:400]), r"sa\.nii\.gz"),
    ],
    ids=["la-3d", "seg4-values", "label-grid", "es-not-in-cine", "truncated"],
)
def test_bad_files_are_read_errors_naming_the_file(tmp_path, damage, message):
    t = write_ukbb_subject(tmp_path)
    damage(t.folder, t)
    with pytest.raises(ReadError, match=message):
        read(tmp_path)


def test_box_centre_in_world_matches_the_crossing_from_the_raw_affines(tmp_path):
    """Ingest, then the position target's 2ch x 4ch crossing, mapped to world coordinates, equals the
    point where the SA slice and the two LA planes meet, solved from the NIfTI affines by hand."""
    from cardiossl.datasets.geometry import Plane
    from cardiossl.datasets.ingest import ingest
    from cardiossl.datasets.torch_dataset import CohortDataset
    from cardiossl.pretexts.position import PositionPretext

    write_ukbb_subject(tmp_path / "in", la_views=("2ch", "4ch"))
    ingest(tmp_path / "in", tmp_path / "store", layout="auto", workers=1, grid_size=48, spacing_mm=1.5,
           progress=False)
    pretext = PositionPretext({"target": "boxes"})
    ds = CohortDataset(tmp_path / "store", views=("sa",), filter=pretext.accepts)
    assert len(ds) == 6 * 5  # every SA slice of every frame has a target

    def plane_eq(path, k=0):
        """(normal, offset) in LPS of slice k of a NIfTI file, from its raw affine."""
        a = RAS_FROM_LPS[:3, :3] @ nib.load(str(path)).affine[:3, :]  # RAS -> LPS (the flip is its own inverse)
        n = np.cross(a[:, 0], a[:, 1])
        n /= np.linalg.norm(n)
        return n, float(n @ (a[:, 3] + k * a[:, 2]))

    folder = tmp_path / "in" / "1000001"
    for i in range(0, len(ds), 7):
        s = ds[i]
        geo = pretext.geometry(s)
        world = Plane.from_vector(s["plane"]).pixel_to_world(*geo.center)
        # stored slice i is file slice i here (the files are written base first)
        rows = [plane_eq(folder / "la_2ch.nii.gz"), plane_eq(folder / "la_4ch.nii.gz"),
                plane_eq(folder / "sa.nii.gz", k=s["slice_index"])]
        m = np.stack([r[0] for r in rows])
        expected = np.linalg.solve(m, np.array([r[1] for r in rows]))
        np.testing.assert_allclose(world, expected, atol=1e-3)


def test_the_wrong_layout_named_explicitly_points_to_the_right_one(tmp_path):
    from cardiossl.datasets.ingest import IngestError, ingest

    write_export_subject(synth_subject("synth00001", 0, n_frames=2, n_sub=1), tmp_path / "export")
    with pytest.raises(IngestError, match=r"layout 'ukbb' finds no subjects .* looks like 'cardiossl-nifti' "
                                          r"\(--layout cardiossl-nifti or auto\)"):
        ingest(tmp_path / "export", tmp_path / "store", layout="ukbb", progress=False)
