"""Version-2 subjects as rendered: labels are the truth where each (misregistered) slice really was,
basal slices cut the atria and great vessels, the stack reaches the apex, the torso is there, the
record is deterministic and its meta JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cardiossl.datasets.synthetic import subject_id_for, synth_heart, synth_subject
from cardiossl.datasets.synthetic import tissues as T
from cardiossl.datasets.synthetic.streams import stream
from cardiossl.datasets.synthetic.torso import Torso

SEED = 21


@pytest.fixture(scope="module", params=[0, 3, 5])  # 3 and 5 have breath-holds displaced by 1.5-4.6 mm
def subject(request):
    i = request.param
    return i, synth_subject(subject_id_for(i), SEED, n_frames=2, n_sub=1)


def _sa(record, phase="ed"):
    return sorted([s for s in record.slices if s.view == "sa" and s.phase == phase], key=lambda s: s.slice_index)


def test_record_and_meta(subject):
    i, rec = subject
    rec.validate()
    meta = json.loads(json.dumps(rec.meta))  # JSON as it is
    assert meta == rec.meta and meta["synth_version"] == 2 and meta["index"] == i
    sa = _sa(rec)
    assert len(sa) == meta["acquisition"]["sa"]["n_slices"] == len(meta["sa_slice_content"])
    assert len(meta["acquisition"]["sa"]["misregistration_mm"]) == len(sa)
    for s in rec.slices:
        assert s.image.dtype == np.float32 and s.image.min() >= 0 and np.all(s.image == np.rint(s.image))
        assert (s.label is not None) == (s.phase in ("ed", "es"))
    assert set(meta["acquisition"]["la"]) == {"2ch", "3ch", "4ch"}
    assert meta["group"] in meta["population"] and 0.15 <= meta["lv_ejection_fraction"] <= 0.75


def test_labels_are_the_truth_where_each_misregistered_slice_was(subject):
    i, rec = subject
    heart = synth_heart(SEED, i)
    moved, big = 0, 0
    for s in _sa(rec) + _sa(rec, "es"):
        d = np.array(rec.meta["acquisition"]["sa"]["misregistration_mm"][s.slice_index])
        rr, cc = np.mgrid[0 : s.label.shape[0], 0 : s.label.shape[1]]
        world = s.plane.pixel_to_world(rr, cc).reshape(-1, 3)
        c = {"ed": 0.0, "es": 1.0}[s.phase]
        truth = heart.labels(heart.to_local(world - d), c).reshape(s.label.shape)
        assert (truth != s.label).sum() <= 2, (s.slice_index, s.phase)
        if np.linalg.norm(d) > 1.5 and (s.label > 0).sum() > 300:
            big += 1
            still = heart.labels(heart.to_local(world), c).reshape(s.label.shape)
            moved += (still != s.label).sum() > 20  # the recorded plane is "wrong" by the displacement
    assert moved == big and (big >= 1 or i == 0)


def test_basal_slices_cut_atria_or_aorta_and_the_stack_reaches_the_apex(subject):
    i, rec = subject
    meta = rec.meta
    above = meta["acquisition"]["sa"]["n_above_base"]
    content = meta["sa_slice_content"]
    assert any({"atrium", "aorta"} & set(c) for c in content[:above])
    assert {"atrium", "aorta"} & set(content[0])
    assert "lv_myocardium" in set().union(*content[above:above + 2])
    sa = _sa(rec)
    lv = np.array([np.isin(s.label, (1, 2)).sum() * np.prod(s.plane.spacing) for s in sa])
    assert lv[-1] < 0.2 * lv.max()  # at or past the apex
    # the same from the tissue map: slice 0 holds atrial or aortic blood
    heart = synth_heart(SEED, i)
    s0 = sa[0]
    rr, cc = np.mgrid[0 : s0.label.shape[0], 0 : s0.label.shape[1]]
    d = np.array(meta["acquisition"]["sa"]["misregistration_mm"][0])
    cls = heart.classes(heart.to_local(s0.plane.pixel_to_world(rr, cc).reshape(-1, 3) - d), 0.0)
    assert np.isin(cls, (T.ATRIUM, T.AORTA)).sum() > 50


def test_torso_tissues_and_contrast(subject):
    i, rec = subject
    heart = synth_heart(SEED, i)
    torso = Torso(stream(SEED, i, "torso"), heart)
    sa = _sa(rec)
    mid = sa[len(sa) // 2]
    rr, cc = np.mgrid[0 : mid.label.shape[0], 0 : mid.label.shape[1]]
    seen = set(np.unique(torso.classes(mid.plane.pixel_to_world(rr, cc).reshape(-1, 3))).tolist())
    assert {T.LUNG, T.SUBCUT_FAT, T.MUSCLE} <= seen and ({T.LIVER, T.STOMACH, T.MARROW, T.BONE} & seen)
    # bright blood, dark myocardium (trabeculae and papillary muscles darken the cavity a little)
    ratios = [s.image[s.label == 1].mean() / s.image[s.label == 2].mean() for s in sa
              if (s.label == 1).sum() > 300 and (s.label == 2).sum() > 300]
    assert ratios and np.median(ratios) > 1.8


def test_deterministic_for_seed_and_index_and_components_independent():
    a = synth_subject("synth00004", 9, n_frames=2, n_sub=1)
    b = synth_subject("synth00004", 9, n_frames=2, n_sub=1)
    c = synth_subject("other-4", 9, n_frames=2, n_sub=1, index=4)  # the index, not the id, seeds it
    d = synth_subject("synth00005", 9, n_frames=2, n_sub=1)
    for x, y, z in zip(a.slices, b.slices, c.slices):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.image, z.image)
        assert np.array_equal(x.plane.to_vector(), y.plane.to_vector())
    assert a.meta == b.meta
    assert a.meta["phenotype"] != d.meta["phenotype"]
    # changing the group proportions changes who the subject is, not how the exam was planned
    e = synth_subject("synth00004", 9, n_frames=2, n_sub=1, population={"DCM": 1})
    assert e.meta["group"] == "DCM"
    assert e.meta["acquisition"]["planning_quality"] == a.meta["acquisition"]["planning_quality"]
    assert e.meta["acquisition"]["sa"]["misregistration_mm"] == a.meta["acquisition"]["sa"]["misregistration_mm"]


def test_random_contrast_changes_only_the_share_of_subjects_it_names_and_only_their_intensities():
    plain = [synth_subject(subject_id_for(i), SEED, n_frames=2, n_sub=1) for i in range(6)]
    mixed = [synth_subject(subject_id_for(i), SEED, n_frames=2, n_sub=1, random_contrast=0.5) for i in range(6)]
    randomised = [m.meta["appearance"].get("contrast_mode") == "randomised" for m in mixed]
    assert any(randomised) and not all(randomised)
    for p, m, r in zip(plain, mixed, randomised):
        assert [s.plane.to_vector().tolist() for s in p.slices] == [s.plane.to_vector().tolist() for s in m.slices]
        for x, y in zip(p.slices, m.slices):
            assert (x.label is None and y.label is None) or np.array_equal(x.label, y.label)
        same = all(np.array_equal(x.image, y.image) for x, y in zip(p.slices, m.slices))
        assert same != r
        if not r:
            assert p.meta == m.meta
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        synth_subject(subject_id_for(0), SEED, n_frames=2, random_contrast=1.5)
    with pytest.raises(ValueError, match="version 2"):
        synth_subject(subject_id_for(0), SEED, n_frames=2, version=1, random_contrast=0.5)
