"""UK Biobank-like NIfTI layout: what the writer writes the reader reads back; bad files fail clearly."""

from __future__ import annotations

import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from cardiossl.datasets.readers import READERS, ReadError
from cardiossl.datasets.readers.nifti_export import NiftiExportReader, write_export_subject
from cardiossl.datasets.synthetic import synth_subject


@pytest.fixture(scope="module")
def record():
    return synth_subject("synth00002", 5, n_frames=3)  # ED 0, ES 1, one unlabelled frame


@pytest.fixture()
def cohort(tmp_path, record):
    write_export_subject(record, tmp_path)
    return tmp_path


def _read(root):
    reader = READERS.get("cardiossl-nifti")()
    sources = reader.discover(root)
    assert len(sources) == 1
    return reader.read(sources[0])


def _by_key(rec):
    return {(s.view, s.slice_index, s.frame): s for s in rec.slices}


def _assert_same(a, b, labels=True):
    ka, kb = _by_key(a), _by_key(b)
    assert ka.keys() == kb.keys()
    for key, x in ka.items():
        y = kb[key]
        assert y.image.dtype == np.float32 and y.image.shape == x.image.shape
        np.testing.assert_allclose(y.image, x.image, rtol=1e-6, atol=1e-4, err_msg=str(key))
        np.testing.assert_allclose(y.plane.to_vector(), x.plane.to_vector(), atol=1e-4, err_msg=str(key))
        assert y.phase == x.phase
        if np.isnan(x.stack_position):
            assert np.isnan(y.stack_position)
        else:
            assert y.stack_position == pytest.approx(x.stack_position)
        if labels and x.label is not None:
            assert y.label is not None and y.label.dtype == np.uint8
            assert np.array_equal(y.label, x.label), key
        else:
            assert y.label is None


def test_registered_and_detected(cohort, tmp_path_factory):
    assert READERS.get("cardiossl-nifti") is NiftiExportReader
    assert NiftiExportReader.detect(cohort)
    assert NiftiExportReader.detect(cohort / "synth00002")  # a single subject folder
    empty = tmp_path_factory.mktemp("empty")
    assert not NiftiExportReader.detect(empty)
    acdc = tmp_path_factory.mktemp("acdc") / "patient001"
    acdc.mkdir()
    (acdc / "patient001_frame01.nii.gz").write_bytes(b"")
    assert not NiftiExportReader.detect(acdc.parent)


def test_layout_files_and_info(cohort, record):
    folder = cohort / "synth00002"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        ["info.json", "sa.nii.gz", "la_2ch.nii.gz", "la_3ch.nii.gz", "la_4ch.nii.gz", "label_sa.nii.gz",
         "label_la_2ch.nii.gz", "label_la_3ch.nii.gz", "label_la_4ch.nii.gz"]
    )
    info = json.loads((folder / "info.json").read_text())
    assert info["ed_frame"] == 0 and info["es_frame"] == record.meta["es_frame"] == 1
    assert info["label_frames"]["sa"] == [0, 1]
    sa = nib.load(str(folder / "sa.nii.gz"))
    n_sa = len({s.slice_index for s in record.slices if s.view == "sa"})
    first = next(s for s in record.slices if s.view == "sa")
    assert sa.shape == (first.image.shape[1], first.image.shape[0], n_sa, 3)
    assert nib.load(str(folder / "label_sa.nii.gz")).shape[3] == 2
    assert nib.load(str(folder / "la_4ch.nii.gz")).shape[2:] == (1, 3)
    # slice k of the file is data[:, :, k, t].T, as Plane.from_nifti assumes
    data = np.asarray(sa.dataobj)
    np.testing.assert_array_equal(data[:, :, 0, 0].T, first.image)


ORDER_KEYS = ("sa_order", "sa_normal_base_to_apex")


def _without_order(meta):
    return {k: v for k, v in meta.items() if k not in ORDER_KEYS}


def test_round_trip_equal(cohort, record):
    back = _read(cohort)
    assert back.subject_id == record.subject_id
    assert _without_order(back.meta) == record.meta
    _assert_same(record, back)
    # the reader orders the stack by geometry: the LA planes' common line is the true LV axis
    assert back.meta["sa_order"].startswith("base to apex along the LV long axis (common line of 3")
    axis = np.subtract(record.meta["lv_axis"]["apex"], record.meta["lv_axis"]["base"])
    cos = np.dot(back.meta["sa_normal_base_to_apex"], axis / np.linalg.norm(axis))
    assert cos > np.cos(np.deg2rad(1.0))


def test_stack_written_apex_first_is_read_base_first(cohort, record):
    """The file order does not decide: a stack saved apex first (affine reversed) reads back the same."""
    folder = cohort / "synth00002"
    for name in ("sa.nii.gz", "label_sa.nii.gz"):
        img = nib.load(str(folder / name))
        data = np.asarray(img.dataobj)[:, :, ::-1].copy()
        aff = img.affine.copy()
        n = data.shape[2]
        aff[:3, 3] = aff[:3, 3] + (n - 1) * aff[:3, 2]
        aff[:3, 2] = -aff[:3, 2]
        out = nib.Nifti1Image(data, aff, img.header)
        out.set_sform(aff, code=1)
        out.set_qform(aff, code=1)
        nib.save(out, str(folder / name))
    _assert_same(record, _read(cohort))


def test_round_trip_without_labels(cohort, record):
    for p in (cohort / "synth00002").glob("label_*.nii.gz"):
        p.unlink()
    back = _read(cohort)
    _assert_same(record, back, labels=False)


def test_labels_keep_their_frames_without_info_json(cohort, record):
    (cohort / "synth00002" / "info.json").unlink()
    back = _read(cohort)
    labelled = {(s.view, s.frame) for s in back.slices if s.label is not None}
    assert {f for _, f in labelled} == {0, 1}  # from the label header: frames=0,1
    assert next(s for s in back.slices if s.frame == 0).phase == "ed"
    a, b = _by_key(record), _by_key(back)
    for key, s in a.items():
        if s.label is not None:
            assert np.array_equal(b[key].label, s.label)


def test_writer_refuses_existing_subject_and_leaves_no_temporaries(cohort, record):
    before = (cohort / "synth00002" / "sa.nii.gz").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        write_export_subject(record, cohort)
    assert (cohort / "synth00002" / "sa.nii.gz").read_bytes() == before
    assert [p.name for p in cohort.iterdir()] == ["synth00002"]


def _rewrite(path, transform):
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    new = transform(img, data)
    nib.save(new, str(path))


def test_truncated_file(cohort):
    path = cohort / "synth00002" / "sa.nii.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ReadError, match=r"sa\.nii\.gz.*truncated or corrupt"):
        _read(cohort)
    path.write_bytes(b"not a gzip stream at all")
    with pytest.raises(ReadError, match=r"sa\.nii\.gz"):
        _read(cohort)


def test_missing_affine(cohort):
    def drop_affine(img, data):
        new = nib.Nifti1Image(data, None)
        new.set_sform(None, code=0)
        new.set_qform(None, code=0)
        return new

    _rewrite(cohort / "synth00002" / "la_2ch.nii.gz", drop_affine)
    with pytest.raises(ReadError, match=r"la_2ch\.nii\.gz: no affine"):
        _read(cohort)


def test_degenerate_affine(cohort):
    def flatten(img, data):
        aff = img.affine.copy()
        aff[:3, 1] = aff[:3, 0]  # two voxel axes along one direction
        new = nib.Nifti1Image(data, aff)
        new.set_sform(aff, code=1)
        new.set_qform(None, code=0)
        return new

    _rewrite(cohort / "synth00002" / "sa.nii.gz", flatten)
    with pytest.raises(ReadError, match=r"sa\.nii\.gz: degenerate affine"):
        _read(cohort)


def test_label_shape_mismatch(cohort):
    def drop_slice(img, data):
        return nib.Nifti1Image(data[:, :, :-1], img.affine, img.header)

    _rewrite(cohort / "synth00002" / "label_sa.nii.gz", drop_slice)
    with pytest.raises(ReadError, match=r"label_sa\.nii\.gz: label shape .* differs from its image sa\.nii"):
        _read(cohort)


def test_label_affine_mismatch(cohort):
    def shift(img, data):
        aff = img.affine.copy()
        aff[:3, 3] += 5.0
        return nib.Nifti1Image(data, aff, img.header)

    _rewrite(cohort / "synth00002" / "label_la_4ch.nii.gz", shift)
    with pytest.raises(ReadError, match=r"label_la_4ch\.nii\.gz: label affine differs"):
        _read(cohort)


def test_nan_pixels(cohort):
    def poison(img, data):
        data = data.astype(np.float32)
        data[3, 4, 0, 0] = np.nan
        new = nib.Nifti1Image(data, img.affine, img.header)
        new.set_data_dtype(np.float32)
        return new

    _rewrite(cohort / "synth00002" / "la_3ch.nii.gz", poison)
    with pytest.raises(ReadError, match=r"la_3ch\.nii\.gz: 1 NaN or Inf pixels"):
        _read(cohort)


def test_missing_sa_and_bad_label_values(cohort):
    def bad_values(img, data):
        data = data.copy()
        data[0, 0, 0, 0] = 7
        return nib.Nifti1Image(data, img.affine, img.header)

    _rewrite(cohort / "synth00002" / "label_sa.nii.gz", bad_values)
    with pytest.raises(ReadError, match=r"label values \[7\]"):
        _read(cohort)
    src = NiftiExportReader().discover(cohort)[0]
    (cohort / "synth00002" / "sa.nii.gz").unlink()
    with pytest.raises(ReadError, match="no sa.nii.gz"):
        NiftiExportReader().read(src)


def test_gzip_member_is_checked_end_to_end(cohort):
    """A file that decompresses but whose image data is cut short is refused as well."""
    path = cohort / "synth00002" / "la_4ch.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 1000]))
    with pytest.raises(ReadError, match=r"la_4ch\.nii\.gz"):
        _read(cohort)
    shutil.rmtree(cohort / "synth00002")
    assert NiftiExportReader().discover(cohort) == []
