"""Predict: labels back in the input geometry (same affine) and volumes against a synthetic subject
whose true volumes are known."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.resample import resample_slice
from cardiossl.datasets.synthetic import synth_subject
from cardiossl.platform.fewshot.evaluate import label_volumes_ml, slice_spacing_mm
from cardiossl.platform.fewshot.predict import (
    PredictError,
    label_to_source,
    measures,
    read_sa_input,
    segment_input,
    write_labels,
)

IMAGE_SIZE, SPACING = 128, 1.5


@pytest.fixture(scope="module")
def subject():
    return synth_subject("synth00003", 0, n_frames=2, n_sub=1)


def _truth(record):
    """{frame: labels [S, rows, cols]} of the SA stack and its planes, from the record itself."""
    sa = [s for s in record.slices if s.view == "sa" and s.label is not None]
    ks = sorted({s.slice_index for s in sa})
    by = {(s.slice_index, s.frame): s for s in sa}
    frames = sorted({s.frame for s in sa})
    planes = [by[(k, frames[0])].plane for k in ks]
    return {t: np.stack([by[(k, t)].label for k in ks]) for t in frames}, planes


def _oracle(record):
    """A 'model' that returns the true labels resampled onto the grid it is asked about (as the
    store does at ingest): the geometry path is then tested without a network's errors."""
    labels, planes = _truth(record)

    def segment(images, grid_planes, frame):
        out = []
        for k, gp in enumerate(grid_planes):
            _, lab_g, plane_g = resample_slice(np.zeros_like(labels[frame][k], np.float32), planes[k], IMAGE_SIZE,
                                               SPACING, labels[frame][k])
            assert np.allclose(plane_g.to_vector(), gp.to_vector())
            out.append(lab_g)
        return np.stack(out)

    return segment


def test_label_to_source_inverts_an_axis_aligned_grid():
    plane = Plane(np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (1.0, 1.0))
    lab = np.zeros((40, 40), np.uint8)
    lab[10:20, 5:30] = 2
    _, lab_g, plane_g = resample_slice(lab.astype(np.float32), plane, 20, 2.0, lab)
    back = label_to_source(lab_g, plane_g, plane, lab.shape)
    assert back.shape == lab.shape and set(np.unique(back)) <= {0, 2}
    assert abs(int((back == 2).sum()) - int((lab == 2).sum())) <= 40  # one-pixel edges at most


def test_nifti_stack_round_trip_keeps_affine_and_matches_true_volumes(subject, tmp_path):
    from cardiossl.datasets.readers.nifti_export import write_export_subject

    folder = write_export_subject(subject, tmp_path)
    inp = read_sa_input(folder)
    assert inp.kind == "cardiossl-nifti" and inp.ed_frame == 0 and inp.es_frame == subject.meta["es_frame"]
    labels = segment_input(inp, _oracle(subject), image_size=IMAGE_SIZE, spacing_mm=SPACING)
    out = write_labels(inp, labels, tmp_path / "out" / "labels.nii.gz")
    src = nib.load(str(folder / "sa.nii.gz"))
    img = nib.load(str(out))
    assert img.shape == src.shape
    np.testing.assert_array_equal(img.affine, src.affine)
    np.testing.assert_allclose(img.header.get_qform(), src.header.get_qform(), atol=1e-5)
    assert img.get_data_dtype() == np.uint8

    truth, planes = _truth(subject)
    gap = slice_spacing_mm(planes)
    assert gap == pytest.approx(subject.meta["sa_slice_gap_mm"], rel=1e-4)
    vol = np.asarray(img.dataobj)
    for t, true_labels in truth.items():
        # voxel agreement with the truth after source -> grid -> source (nearest both ways)
        got = np.transpose(vol[..., t], (2, 1, 0))
        for c in (1, 2, 3):
            inter = np.logical_and(got == c, true_labels == c).sum()
            assert 2 * inter / ((got == c).sum() + (true_labels == c).sum()) > 0.93
        sp = [(gap, p.spacing[0], p.spacing[1]) for p in planes]
        want = label_volumes_ml(true_labels, sp)
        have = label_volumes_ml(got, sp)
        for c in want:
            assert have[c] == pytest.approx(want[c], rel=0.03)

    m = measures(inp, labels, inp.ed_frame, inp.es_frame)
    true_ml = subject.meta["volumes_ml"]
    # discs of the labelled slices against the analytic heart: the partial-volume error of an
    # 8-10 mm slice gap, not an error of the resampling
    assert m["lv_edv_ml"] == pytest.approx(true_ml["ed"]["lv_cavity"], rel=0.12)
    assert m["lv_esv_ml"] == pytest.approx(true_ml["es"]["lv_cavity"], rel=0.15)
    assert m["rv_edv_ml"] == pytest.approx(true_ml["ed"]["rv_cavity"], rel=0.15)
    assert m["lv_ef_pct"] == pytest.approx(100 * subject.meta["lv_ejection_fraction"], abs=6.0)
    assert m["lv_mass_g"] == pytest.approx(1.05 * true_ml["ed"]["lv_myocardium"], rel=0.15)


def test_es_auto_picks_the_smallest_lv_frame(subject, tmp_path):
    from cardiossl.datasets.readers.nifti_export import write_export_subject

    folder = write_export_subject(subject, tmp_path)
    inp = read_sa_input(folder / "sa.nii.gz")  # the file alone: no info.json, ED = frame 0
    assert inp.es_frame is None and inp.ed_frame == 0
    labels = segment_input(inp, _oracle(subject), image_size=IMAGE_SIZE, spacing_mm=SPACING)
    m = measures(inp, labels, 0, "auto")
    assert m["es_frame"] == subject.meta["es_frame"] and "smallest" in m["es_frame_source"]


def _write_dicom_sa(record, folder):
    """The SA stack of a record as single-frame DICOM files (one series per slice, cine frames)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    study, frame_of_ref = generate_uid(), generate_uid()
    sa = [s for s in record.slices if s.view == "sa"]
    hi = max(float(s.image.max()) for s in sa)
    series = {}
    for s in sa:
        uid = series.setdefault(s.slice_index, generate_uid())
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{s.slice_index:02d}_{s.frame:02d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MR", study, uid
        ds.FrameOfReferenceUID, ds.Manufacturer = frame_of_ref, "synthetic"
        ds.SeriesNumber, ds.SeriesDescription = 10 + s.slice_index, "cine sax"
        ds.InstanceNumber, ds.TriggerTime = s.frame + 1, f"{s.frame * 40.0:.1f}"
        ds.ImagePositionPatient = [f"{x:.6f}" for x in s.plane.origin]
        ds.ImageOrientationPatient = [f"{x:.8f}" for x in np.concatenate([s.plane.row_dir, s.plane.col_dir])]
        ds.PixelSpacing = [f"{x:.6f}" for x in s.plane.spacing]
        ds.SliceThickness = "7"
        px = np.clip(np.rint(s.image / hi * 4000), 0, 4095).astype(np.uint16)
        ds.Rows, ds.Columns = px.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = px.tobytes()
        ds.save_as(str(folder / f"{s.slice_index:02d}_{s.frame:02d}.dcm"), enforce_file_format=True)


def test_dicom_exam_labels_sit_on_the_dicom_planes(subject, tmp_path):
    _write_dicom_sa(subject, tmp_path / "exam")
    inp = read_sa_input(tmp_path / "exam")
    truth, planes = _truth(subject)
    assert inp.kind == "dicom" and inp.n_slices == len(planes) and inp.ed_frame == 0
    labels = segment_input(inp, _oracle(subject), image_size=IMAGE_SIZE, spacing_mm=SPACING)
    out = write_labels(inp, labels, tmp_path / "labels.nii.gz")
    img = nib.load(str(out))
    for k in (0, len(planes) - 1):  # slice k of the label volume lies on DICOM plane k
        p = Plane.from_nifti(img.affine, k)
        np.testing.assert_allclose(p.origin, planes[k].origin, atol=1e-3)
        np.testing.assert_allclose(p.row_dir, planes[k].row_dir, atol=1e-6)
        np.testing.assert_allclose(p.spacing, planes[k].spacing, atol=1e-6)
    got = np.transpose(np.asarray(img.dataobj)[..., 0], (2, 1, 0))
    assert (got == truth[0]).mean() > 0.99
    m = measures(inp, labels, 0, "auto")
    true_ml = subject.meta["volumes_ml"]
    assert m["es_frame"] == 1 and m["lv_edv_ml"] == pytest.approx(true_ml["ed"]["lv_cavity"], rel=0.12)


def test_predict_command_with_a_registered_model(subject, tmp_path):
    """The CLI end to end: a segmenter registered in MLflow (sqlite), a NIfTI input, outputs."""
    from typer.testing import CliRunner

    from cardiossl.backbones import build_backbone
    from cardiossl.datasets.readers.nifti_export import write_export_subject
    from cardiossl.platform import tracking
    from cardiossl.platform.cli import app
    from cardiossl.platform.tracking import build_segmenter, register_segmenter, save_segmenter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bb = {"name": "unet", "params": {"depth": 3, "width": 4}}
    model = build_segmenter(build_backbone(bb["name"], **bb["params"]))
    with tracking_run(uri) as run_id:
        folder = save_segmenter(model, {"backbone": bb, "n_classes": 4, "image_size": 64, "spacing_mm": 3.0},
                                tmp_path / "seg")
        tracking.MlflowTracker(run_id, uri).log_artifacts(str(folder), "segmenter")
        assert register_segmenter(uri, run_id, "segmenter", "seg-test", "champion") == "1"
    sub = write_export_subject(subject, tmp_path / "in")
    res = CliRunner().invoke(app, ["predict", "--model", "models:/seg-test@champion", str(sub / "sa.nii.gz"),
                                   "--out", str(tmp_path / "pred"), "--tracking-uri", uri, "--ed", "0", "--es", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "pred" / "measures.json").read_text())
    for k in ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "lv_mass_g"):
        assert k in out
    assert out["ed_frame"] == 0 and out["es_frame"] == 1
    img, src = nib.load(str(tmp_path / "pred" / "labels.nii.gz")), nib.load(str(sub / "sa.nii.gz"))
    assert img.shape == src.shape and np.array_equal(img.affine, src.affine)
    bad = CliRunner().invoke(app, ["predict", "--model", str(folder), str(tmp_path / "missing.nii.gz"),
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "no such file" in " ".join(bad.output.split())


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(PredictError, match="expected a NIfTI"):
        read_sa_input(tmp_path / "x.txt")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), None), str(tmp_path / "noaffine.nii.gz"))
    with pytest.raises(PredictError, match="no scanner geometry"):
        read_sa_input(tmp_path / "noaffine.nii.gz")


class tracking_run:
    def __init__(self, uri):
        self.uri = uri

    def __enter__(self):
        from cardiossl.platform import tracking

        self.run_id = tracking.create_run(self.uri, "predict-test", "seg")
        return self.run_id

    def __exit__(self, *exc):
        from cardiossl.platform import tracking

        tracking.finish_run(self.uri, self.run_id)
