import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_exams import (
    AXIS,
    SA_SHAPE,
    SA_SPACING,
    centred_origin,
    pattern,
    read_back,
    write_enhanced,
    write_exam,
    write_image,
)
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from cardiossl.datasets.geometry import Plane, line_segment_in_image, trace_in_slice
from cardiossl.datasets.readers import READERS, ReadError, SubjectSource
from cardiossl.datasets.readers import dicom as dicom_mod
from cardiossl.datasets.readers.dicom import DicomReader, build_exam, description_hint, scan_exam

REAL = Path(__file__).parents[3] / ".." / "shared" / "data" / "real"


def read(folder: Path, subject_id="exam1"):
    return DicomReader().read(SubjectSource(subject_id, folder.parent, (folder,)))


def views_by_series(record):
    return {s["series_number"]: (s["view"], s["slice_index"]) for s in record.meta["series"]}


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "exam1"
    truth = write_exam(folder)
    images, notes = scan_exam(folder)
    record, sources = build_exam("exam1", images, notes)
    return folder, truth, record.validate(), sources


def test_registered_and_detected(exam, tmp_path):
    folder, *_ = exam
    assert READERS.get("dicom") is DicomReader
    assert DicomReader.detect(folder.parent)
    (tmp_path / "notes.txt").write_text("not dicom")
    assert not DicomReader.detect(tmp_path)


def test_stored_planes_equal_the_written_headers(exam):
    _, _, record, sources = exam
    assert len(record.slices) == len(sources) == (5 + 3 + 1) * 3
    for s, im in zip(record.slices, sources):
        ipp, iop, ps = read_back(im.path)
        expected = Plane.from_dicom(ipp, iop, ps)
        np.testing.assert_allclose(s.plane.to_vector(), expected.to_vector(), atol=1e-9)
        # PixelSpacing is (row, column): the last pixel of the first row lies (cols-1)*ps[1] along IOP[0:3]
        rows, cols = s.image.shape
        np.testing.assert_allclose(s.plane.pixel_to_world(0, cols - 1),
                                   np.array(ipp) + (cols - 1) * ps[1] * np.array(iop[:3]), atol=1e-9)
        np.testing.assert_allclose(s.plane.pixel_to_world(rows - 1, 0),
                                   np.array(ipp) + (rows - 1) * ps[0] * np.array(iop[3:]), atol=1e-9)
    sa = [s for s in record.slices if s.view == "sa"]
    assert {s.plane.spacing for s in sa} == {SA_SPACING}
    assert {s.image.shape for s in sa} == {SA_SHAPE}


def test_pixels_are_the_stored_values(exam):
    _, _, record, sources = exam
    for s, im in list(zip(record.slices, sources))[:6]:
        assert s.image.dtype == np.float32
        np.testing.assert_array_equal(s.image, pydicom.dcmread(im.path).pixel_array.astype(np.float32))


def test_views_from_geometry(exam):
    _, truth, record, _ = exam
    got = views_by_series(record)
    for number, expected in truth.items():
        if number < 20:  # SA slices: checked in the ordering test
            assert got[number][0] == "sa"
        else:
            assert got[number] == expected[0], record.meta["series"]
    assert 2 not in got  # the single-image localizer
    assert any("localizer" in n for n in record.meta["skipped"])


def test_sa_order_base_to_apex_and_cine_frames(exam):
    _, truth, record, sources = exam
    sa = sorted((s for s in record.slices if s.view == "sa" and s.frame == 0), key=lambda s: s.slice_index)
    assert [s.slice_index for s in sa] == [0, 1, 2, 3, 4]
    # the written slice k sits at k * 10 mm from the base along the apex-ward axis
    along = [float(s.plane.center(s.image.shape) @ AXIS) for s in sa]
    np.testing.assert_allclose(np.diff(along), 10.0, atol=1e-6)
    np.testing.assert_allclose([s.stack_position for s in sa], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-9)
    for s, im in zip(record.slices, sources):
        if s.view == "sa":
            assert im.path.name == f"k{s.slice_index}_f{s.frame}.dcm"  # frames by TriggerTime, not InstanceNumber
        assert s.phase == ("ed" if s.frame == 0 else "")
        if s.view != "sa":
            assert np.isnan(s.stack_position)


def test_flipped_normal_and_one_series_stack(tmp_path):
    """A whole SA stack in one series (mixed planes) with the normal pointing the other way."""
    folder = tmp_path / "exam2"
    truth = write_exam(folder, one_sa_series=True, flip_sa_normal=True, rvot=False, localizer=False)
    record = read(folder, "exam2")
    got = views_by_series(record)
    assert [v for v in record.meta["series"] if v["series_number"] == 1 and v["view"] == "sa"].__len__() == 5
    for number in (20, 21, 22):
        assert got[number] == truth[number][0]
    sa = sorted((s for s in record.slices if s.view == "sa" and s.frame == 0), key=lambda s: s.slice_index)
    along = [float(s.plane.center(s.image.shape) @ AXIS) for s in sa]
    assert np.all(np.diff(along) > 9.99)  # slice 0 basal, increasing towards the apex


def test_misleading_descriptions_do_not_override_geometry(tmp_path):
    folder = tmp_path / "exam3"
    truth = write_exam(folder, descriptions={"4ch": "cine 2CH", "2ch": "cine 4CH", "rvot": "cine"},
                       localizer=False)
    got = views_by_series(read(folder))
    assert got[20] == ("4ch", 0) and got[22] == ("2ch", 0) and got[21] == ("3ch", 0)
    assert got[30] == truth[30][0]


def test_without_sa_stack_views_come_from_descriptions(tmp_path):
    folder = tmp_path / "la_only"
    write_exam(folder, n_slices=5, descriptions={"4ch": "cine 4CH", "2ch": "cine 2ch", "3ch": "cine"},
               rvot=False, localizer=False)
    for p in folder.glob("sa*"):
        shutil.rmtree(p)
    got = views_by_series(read(folder))
    assert got == {20: ("4ch", 0), 21: ("la", 0), 22: ("2ch", 0)}


def test_repeated_sa_position_keeps_the_later_series(tmp_path):
    folder = tmp_path / "repeat"
    write_exam(folder, n_slices=3, rvot=False, localizer=False)
    # series 40 re-acquires basal slice 0 (same plane) later in the exam
    for f, src in enumerate(sorted((folder / "sa10").glob("*.dcm"))):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SOPInstanceUID = "1.2.3.40", 40, f"1.2.3.40.{f}"
        (folder / "sa40").mkdir(exist_ok=True)
        ds.save_as(folder / "sa40" / src.name)
    record = read(folder)
    got = views_by_series(record)
    assert got[40] == ("sa", 0) and 10 not in got
    assert any("series 10" in n and "same position" in n for n in record.meta["skipped"])
    assert sorted({s.slice_index for s in record.slices if s.view == "sa"}) == [0, 1, 2]


def test_enhanced_multiframe_stack(tmp_path):
    """An SA stack as one Enhanced MR object (frames shuffled) beside single-frame LA series."""
    folder = tmp_path / "enh"
    write_exam(folder, n_slices=3, rvot=False, localizer=False)
    legacy = {}
    for p in sorted(folder.glob("sa*/*.dcm")):
        k, f = (int(x[1:]) for x in p.stem.split("_"))
        legacy[(k, f)] = (read_back(p), pydicom.dcmread(p).pixel_array)
        p.unlink()
    order = sorted(legacy, key=lambda kf: (kf[1], -kf[0]))  # stored phase-major, apex first
    frames = [(*legacy[kf][0], 40.0 * kf[1], legacy[kf][1]) for kf in order]
    write_enhanced(folder / "enh" / "stack.dcm", frames, series_uid=generate_uid(), slope=2.0, intercept=-5.0)
    record = read(folder)
    sa = [s for s in record.slices if s.view == "sa"]
    assert sorted({(s.slice_index, s.frame) for s in sa}) == sorted(legacy)
    for s in sa:
        (ipp, iop, ps), px = legacy[(s.slice_index, s.frame)]
        np.testing.assert_allclose(s.plane.to_vector(), Plane.from_dicom(ipp, iop, ps).to_vector(), atol=1e-9)
        np.testing.assert_array_equal(s.image, px.astype(np.float32) * 2.0 - 5.0)
    got = views_by_series(record)
    assert got[20] == ("4ch", 0) and got[21] == ("3ch", 0) and got[22] == ("2ch", 0)


@pytest.mark.parametrize("angle_4ch", [155.0, 162.0, 180.0, 200.0])  # 162: bivme-patient1
def test_lv_view_pattern_fit(angle_4ch):
    """Any 4ch within ~25 degrees of the septal direction: all three, and any two, resolve."""
    thetas = {"4ch": angle_4ch, "3ch": angle_4ch - 60.0, "2ch": angle_4ch + 60.0}
    for names in (["2ch", "4ch", "3ch"], ["4ch", "2ch"], ["3ch", "4ch"], ["2ch", "3ch"]):
        views, phi = dicom_mod.assign_lv_views([thetas[v] % 180.0 for v in names], [None] * len(names))
        assert views == names, (names, angle_4ch)
        assert abs((phi - angle_4ch + 90) % 180 - 90) <= 1.0


def test_lv_view_pattern_tie_is_broken_by_descriptions():
    """The AHA model's 4ch (inferoseptal, 30 deg from septal) ties with the 3ch; a description decides."""
    thetas = [30.0, 150.0, 90.0]  # 4ch, 3ch, 2ch
    views, _ = dicom_mod.assign_lv_views(thetas, ["4ch", None, None])
    assert views == ["4ch", "3ch", "2ch"]
    views, _ = dicom_mod.assign_lv_views(thetas, [None, None, "2ch"])
    assert views == ["4ch", "3ch", "2ch"]


def test_description_hints():
    assert description_hint("cine_trufi_retro 4CH") == "4ch"
    assert description_hint("CINE LVOT") == "3ch"
    assert description_hint("sa_stack") == "sa"
    assert description_hint("SAX cine") == "sa"
    assert description_hint("RVOT") == "rvot"
    assert description_hint("cine_trufi_retro") is None


def test_blank_frame_of_reference_and_manufacturer(tmp_path):
    folder = tmp_path / "exam4"
    truth = write_exam(folder, frame_of_reference="", manufacturer="", rvot=False, localizer=False)
    record = read(folder)
    got = views_by_series(record)
    for number in (20, 21, 22):
        assert got[number] == truth[number][0]
    assert any("FrameOfReferenceUID" in w for w in record.meta["warnings"])
    assert any("Manufacturer" in w for w in record.meta["warnings"])


def _geometry_kwargs():
    return dict(ipp=centred_origin([0, 0, 0], [1, 0, 0], [0, 1, 0], (1.0, 1.0), (16, 16)), iop=[1, 0, 0, 0, 1, 0],
                spacing=(1.0, 1.0))


def test_jpeg2000_decodes_or_names_the_missing_plugin(tmp_path):
    arr = pattern((16, 16), 3)
    problem = dicom_mod.missing_decoder(JPEG2000Lossless)
    if problem is None:  # a decoder is installed: lossless round trip through an encoded codestream
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG2000", no_jp2=True, irreversible=False)
        data = buf.getvalue()
    else:
        data = b"\xff\x4f\xff\x51" + bytes(64)
    path = write_image(tmp_path / "s" / "j2k.dcm", pixels=arr, series_uid=generate_uid(), description="sax j2k",
                       transfer_syntax=JPEG2000Lossless, pixel_bytes=encapsulate([data]), **_geometry_kwargs())
    images, _ = scan_exam(tmp_path / "s")
    if problem is None:
        np.testing.assert_array_equal(dicom_mod.read_pixels(images[0]), arr.astype(np.float32))
    else:
        with pytest.raises(ReadError, match="pylibjpeg-openjpeg") as e:
            dicom_mod.read_pixels(images[0])
        assert str(path) in str(e.value)


def test_missing_plugin_error_names_plugin_and_package(tmp_path, monkeypatch):
    path = write_image(tmp_path / "s" / "jls.dcm", pixels=pattern((16, 16), 4), series_uid=generate_uid(),
                       transfer_syntax=JPEGLSLossless, pixel_bytes=encapsulate([b"\xff\xd8" + bytes(32)]),
                       **_geometry_kwargs())
    images, _ = scan_exam(tmp_path / "s")
    if dicom_mod.missing_decoder(JPEGLSLossless) is None:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(ReadError) as e:
        dicom_mod.read_pixels(images[0])
    msg = str(e.value)
    assert str(path) in msg and "JPEG-LS" in msg and "pip install pylibjpeg pylibjpeg-libjpeg" in msg


def test_missing_geometry_names_the_series(tmp_path):
    folder = tmp_path / "exam5"
    write_exam(folder, n_slices=3, rvot=False, localizer=False)
    write_image(folder / "bad" / "1.dcm", pixels=pattern((16, 16), 5), series_uid=generate_uid(), series_number=77,
                description="cine_nogeo", drop=("ImageOrientationPatient",), **_geometry_kwargs())
    with pytest.raises(ReadError, match=r"series 77 'cine_nogeo'.*ImageOrientationPatient"):
        read(folder)


def test_truncated_file_is_a_read_error(tmp_path):
    folder = tmp_path / "exam6"
    write_exam(folder, n_slices=3, rvot=False, localizer=False)
    victim = sorted((folder / "la20").glob("*.dcm"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ReadError, match=victim.name):
        read(folder)
    victim.write_bytes(data[:200])  # cut inside the header
    with pytest.raises(ReadError, match=victim.name):
        read(folder)


def test_rescale_slope_and_intercept(tmp_path):
    arr = pattern((16, 16), 6)
    write_image(tmp_path / "s" / "1.dcm", pixels=arr, series_uid=generate_uid(), slope=2.5, intercept=-100,
                **_geometry_kwargs())
    images, _ = scan_exam(tmp_path / "s")
    np.testing.assert_allclose(dicom_mod.read_pixels(images[0]), arr * 2.5 - 100, rtol=1e-6)


def test_discover_subjects_and_single_exam(tmp_path):
    write_exam(tmp_path / "cohort" / "a b", n_slices=2, n_frames=2, rvot=False, localizer=False, study_uid="1.2.3.1")
    write_exam(tmp_path / "cohort" / "c", n_slices=2, n_frames=2, rvot=False, localizer=False, study_uid="1.2.3.2")
    ids = [s.subject_id for s in DicomReader().discover(tmp_path / "cohort")]
    assert ids == ["a_b", "c"]
    # one exam whose series sit in sub-folders (one study): the root is the subject
    one = DicomReader().discover(tmp_path / "cohort" / "c")
    assert [(s.subject_id, s.paths) for s in one] == [("c", (tmp_path / "cohort" / "c",))]


# ---------------------------------------------------------------------------------------------------
# real case: bivme-patient1
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bivme():
    folder = REAL / "bivme-patient1"
    if not folder.is_dir():
        pytest.skip("real case bivme-patient1 absent")
    images, notes = scan_exam(folder)
    record, sources = build_exam("bivme-patient1", images, notes, source=str(folder))
    return record.validate(), sources


def _folder_views(record, sources):
    out = {}
    for s, im in zip(record.slices, sources):
        out.setdefault(im.path.parent.name, set()).add((s.view, s.slice_index))
    return out


@pytest.mark.real
def test_bivme_sa_planes_equal_headers(bivme):
    record, sources = bivme
    sa = [(s, im) for s, im in zip(record.slices, sources) if s.view == "sa"]
    assert len(sa) == 6 * 25
    assert {s.slice_index for s, _ in sa} == set(range(6))
    for s, im in sa:
        expected = Plane.from_dicom(*read_back(im.path))
        np.testing.assert_allclose(s.plane.to_vector(), expected.to_vector(), atol=1e-9)


@pytest.mark.real
def test_bivme_views(bivme):
    record, sources = bivme
    views = _folder_views(record, sources)
    sa_order = ["Se11", "Se1", "Se2", "Se3", "Se4", "Se5"]  # base (Se11) to apex (Se5)
    for i, name in enumerate(sa_order):
        assert views[name] == {("sa", i)}
    assert views["Se6"] == {("4ch", 0)}
    assert views["Se8"] == {("2ch", 0)}
    assert views["Se7"] == {("3ch", 0)}  # described as 4CH; it contains the LV axis and the outflow tract
    assert views["Se10"] == {("rvot", 0)}
    # Se9 is described as 2CH but lies ~5 cm from the LV long axis (parallel to Se8): not an LV 2ch plane
    assert views["Se9"] == {("la", 0)}
    assert record.meta["ed_frame"] == 0


@pytest.mark.real
def test_bivme_every_la_plane_crosses_every_sa_slice_in_view(bivme):
    record, _ = bivme
    first = [s for s in record.slices if s.frame == 0]
    sa = [s for s in first if s.view == "sa"]
    la = [s for s in first if s.view != "sa"]
    assert len(sa) == 6 and len(la) == 5
    for a in sa:
        for b in la:
            for one, other in ((a, b), (b, a)):
                trace = trace_in_slice(one.plane, other.plane)
                assert trace is not None
                assert line_segment_in_image(trace[0], trace[1], one.image.shape) is not None, (one.view, other.view)


@pytest.mark.real
def test_bivme_is_discovered_as_one_subject():
    """Its series sit in sub-folders Se1..Se11 of one study: the folder is one exam, not eleven."""
    folder = REAL / "bivme-patient1"
    if not folder.is_dir():
        pytest.skip("real case bivme-patient1 absent")
    sources = DicomReader().discover(folder)
    assert [(s.subject_id, s.paths) for s in sources] == [("bivme-patient1", (folder,))]
