from pathlib import Path

import numpy as np
import pytest
from dicom_exams import AXIS, centred_origin, in_plane_basis, pattern, write_image
from pydicom.uid import generate_uid

from cardiossl.datasets.readers import READERS, ReadError, SubjectSource
from cardiossl.datasets.readers.sunnybrook import (
    SunnybrookReader,
    contour_label,
    rasterize,
    read_contour,
)

REAL = Path(__file__).parents[3] / ".." / "shared" / "data" / "real"
SHAPE = (48, 48)


def circle(centre_rc, radius, n=90):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre_rc[0] + radius * np.sin(t), centre_rc[1] + radius * np.cos(t)], axis=1)


def write_contour(path: Path, rc: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{c:.2f} {r:.2f}\n" for r, c in rc))  # files hold "x y" = "column row"


def dilate(mask):
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def assert_cavity_inside_ring(label, open_fraction=0.0):
    """The myocardium ring encloses the cavity; at most ``open_fraction`` of the pixels bordering the
    cavity may be background (basal slices, where the ring opens into the outflow tract)."""
    cavity, myo = label == 1, label == 2
    assert cavity.any() and myo.any()
    assert set(np.unique(label).tolist()) <= {0, 1, 2}
    border = dilate(cavity) & ~cavity
    assert np.mean(label[border] == 0) <= open_fraction
    # and the cavity is not on the image border
    assert not (cavity[0].any() or cavity[-1].any() or cavity[:, 0].any() or cavity[:, -1].any())


def test_rasterize_counts_pixel_centres():
    square = np.array([[1.5, 2.5], [1.5, 6.5], [4.5, 6.5], [4.5, 2.5]])  # rows 2..4, cols 3..6
    mask = rasterize(square, (8, 10))
    assert mask.sum() == 3 * 4
    assert mask[2:5, 3:7].all()


def test_read_contour_swaps_x_y(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("10.0 2.0\n11.0 2.0\n11.0 3.0\n")
    np.testing.assert_array_equal(read_contour(p)[0], [2.0, 10.0])
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(ReadError, match="bad.txt"):
        read_contour(tmp_path / "bad.txt")


def test_contour_label_ring():
    label = contour_label(circle((24, 20), 6), circle((24, 20), 10), SHAPE)
    assert_cavity_inside_ring(label)
    assert label[24, 20] == 1 and label[24, 20 + 8] == 2 and label[24, 20 + 12] == 0


def write_sunnybrook(folder: Path, n_slices=3, n_frames=4, ed=3, es=1, o_contour_numbers=None):
    """SA cine as dicoms/<N>.dcm (N = slice * frames + frame + 1); ED contours i+o, ES contours i only."""
    lat, ant, _ = in_plane_basis(AXIS)
    row, col = lat, np.cross(AXIS, lat)
    uid = generate_uid()
    for k in range(n_slices):
        centre = k * 8.0 * AXIS
        for f in range(n_frames):
            n = k * n_frames + f + 1
            write_image(folder / "dicoms" / f"{n}.dcm", ipp=centred_origin(centre, row, col, (1.3, 1.3), SHAPE),
                        iop=[*row, *col], spacing=(1.3, 1.3), pixels=pattern(SHAPE, n), series_uid=uid,
                        series_number=300, description="", trigger_time=50.0 * f, instance_number=n)
    labelled = {}
    for k in range(1, n_slices):
        n_ed = k * n_frames + ed + 1
        n_es = k * n_frames + es + 1
        write_contour(folder / "contours" / "i-contours" / f"IM-0001-{n_ed:04d}-icontour-manual.txt",
                      circle((24, 22), 7))
        write_contour(folder / "contours" / "o-contours" / f"IM-0001-{n_ed:04d}-ocontour-manual.txt",
                      circle((24, 22), 11))
        write_contour(folder / "contours" / "i-contours" / f"IM-0001-{n_es:04d}-icontour-manual.txt",
                      circle((24, 22), 4))
        labelled[k] = ed
    return labelled


def test_hand_built_subject(tmp_path):
    folder = tmp_path / "SC-HF-1"
    labelled = write_sunnybrook(folder)
    assert SunnybrookReader.detect(tmp_path) and SunnybrookReader.detect(folder)
    assert READERS.get("sunnybrook") is SunnybrookReader
    sources = SunnybrookReader().discover(tmp_path)
    assert [s.subject_id for s in sources] == ["SC-HF-1"]
    record = SunnybrookReader().read(sources[0])
    assert record.meta["label_classes"] == [1, 2]
    assert record.meta["ed_frame"] == 3 and record.meta["es_frame"] == 1
    with_label = {(s.slice_index, s.frame) for s in record.slices if s.label is not None}
    assert with_label == {(k, f) for k, f in labelled.items()}  # ES frames (endocardium only): unlabelled
    for s in record.slices:
        assert s.view == "sa"
        assert s.phase == {3: "ed", 1: "es"}.get(s.frame, "")
        if s.label is not None:
            assert_cavity_inside_ring(s.label)
            assert s.label[24, 22] == 1 and s.label[24, 22 + 9] == 2


def test_contour_without_its_image_is_a_read_error(tmp_path):
    folder = tmp_path / "s1"
    write_sunnybrook(folder, n_slices=2)
    write_contour(folder / "contours" / "i-contours" / "IM-0001-0099-icontour-manual.txt", circle((24, 22), 5))
    with pytest.raises(ReadError, match=r"\[99\]"):
        SunnybrookReader().read(SubjectSource("s1", tmp_path, (folder,)))


# ---------------------------------------------------------------------------------------------------
# real case
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_case():
    folder = REAL / "sunnybrook-SCD0000101"
    if not folder.is_dir():
        pytest.skip("real case sunnybrook-SCD0000101 absent")
    sources = SunnybrookReader().discover(folder)
    return folder, SunnybrookReader().read(sources[0])


def _shoelace(rc):
    r, c = rc[:, 0], rc[:, 1]
    return 0.5 * abs(float(np.dot(r, np.roll(c, 1)) - np.dot(c, np.roll(r, 1))))


@pytest.mark.real
def test_real_labels_where_both_contours_exist(real_case):
    folder, record = real_case
    both = {p.name.split("-")[2] for p in (folder / "contours" / "o-contours").iterdir()}
    assert len(both) == 9
    labelled = [s for s in record.slices if s.label is not None]
    assert len(labelled) == 9
    assert record.meta["label_classes"] == [1, 2]
    assert record.meta["ed_frame"] == 18 and record.meta["es_frame"] == 7
    assert {s.frame for s in labelled} == {18} and {s.phase for s in labelled} == {"ed"}
    assert len({s.slice_index for s in labelled}) == 9
    basal = min(s.slice_index for s in labelled)
    for s in labelled:
        # the most basal contoured slice opens towards the outflow tract; all others are closed rings
        assert_cavity_inside_ring(s.label, open_fraction=0.2 if s.slice_index == basal else 0.0)
        assert s.label.shape == s.image.shape == (256, 256)
    # rasterised cavity areas match the contour polygons (within the one-pixel boundary band)
    for number in sorted(both):
        inner = read_contour(folder / "contours" / "i-contours" / f"IM-0001-{number}-icontour-manual.txt")
        mask = rasterize(inner, (256, 256))
        perimeter = float(np.sum(np.linalg.norm(np.diff(inner, axis=0, append=inner[:1]), axis=1)))
        assert abs(mask.sum() - _shoelace(inner)) < 0.5 * perimeter


@pytest.mark.real
def test_real_sa_stack(real_case):
    _, record = real_case
    sa = [s for s in record.slices if s.view == "sa"]
    assert len(sa) == 12 * 20
    assert {s.slice_index for s in sa} == set(range(12))
    first = sorted((s for s in sa if s.frame == 0), key=lambda s: s.slice_index)
    assert first[0].stack_position == 0.0 and first[-1].stack_position == 1.0
    # base to apex: the labelled LV cavity shrinks towards the apex
    cav = {s.slice_index: int((s.label == 1).sum()) for s in sa if s.label is not None}
    idx = sorted(cav)
    assert cav[idx[-1]] < cav[idx[len(idx) // 2]]
